// Live updates of the grid, the statistics and the open detail.
//
// Polling, not server-sent events: it passes every proxy, and costs the server two small
// queries it answers in well under a millisecond. The first page brings new images and the
// changes of those on it; an unfinished image further down is asked for by itself. Nothing
// is asked while the tab is hidden.

import { getJSON, imagePath } from "./api.js";
import { refreshDetail } from "./detail.js";
import { PAGE_SIZE, fetchPage, inView, layout, showNotice, upsertTile, usesTakenOrder } from "./grid.js";
import { byMeaning } from "./search.js";
import { FINISHED, state } from "./state.js";
import { refreshStats } from "./stats.js";
import { followingUploads } from "./uploads.js";

const POLL_BUSY_MS = 2000; // something is queued or uploading: watch closely
const POLL_IDLE_MS = 10000; // nothing moving: just notice images dropped into the inbox
const LIST_MAX = 500; // the most images one page of the list may hold (the API's limit)

async function refresh() {
  const generation = state.generation;
  if (usesTakenOrder() || byMeaning()) {
    await refreshInListOrder(generation);
    return;
  }
  const page = await fetchPage();
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
      if (!inView(record)) {
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

// In the order of capture, a new image (an old photo sent today) may belong anywhere, and so
// it may by meaning (ranked by its caption): the list is asked for again down to what is
// shown, up to the longest page the API gives, in its order; what is shown beyond that stays
// as it is.
async function refreshInListOrder(generation) {
  const shown = state.order.length;
  const limit = Math.min(LIST_MAX, Math.max(PAGE_SIZE, shown));
  const page = await fetchPage({ limit: String(limit) });
  if (generation !== state.generation || state.loading) return;
  const fetched = page.items.map((item) => item.id);
  const fetchedSet = new Set(fetched);
  const rest = page.next_cursor && shown > limit ? state.order.slice(limit).filter((id) => !fetchedSet.has(id)) : [];
  const kept = new Set([...fetched, ...rest]);
  for (const id of state.order) if (!kept.has(id)) state.items.delete(id);
  for (const item of page.items) {
    const isNew = !state.items.has(item.id);
    state.items.set(item.id, item);
    upsertTile(item, { fresh: isNew && shown > 0 });
  }
  state.order = [...fetched, ...rest];
  if (!rest.length) state.cursor = page.next_cursor;
  layout();
}

function summaryOf(record) {
  const { id, filename, status, received_at, error, error_kind, can_reprocess, caption, caption_status, caption_error,
    thumbnails, links } = record;
  return { id, filename, status, received_at, error, error_kind, can_reprocess, caption, caption_status, caption_error,
    thumbnails, links };
}

function busy() {
  if (state.uploadsActive > 0 || followingUploads()) return true;
  for (const id of state.order) if (!FINISHED.has(state.items.get(id).status)) return true;
  return false;
}

let polling = false;
let pollAgain = false;

// One poll at a time; a call during one (an upload just ended) runs another right after it.
export async function poll() {
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
  scheduleNext(queued);
}

function schedule(delay) {
  clearTimeout(state.pollTimer);
  state.pollTimer = document.visibilityState === "visible" ? setTimeout(poll, delay) : null;
}

// Soon while anything moves (an upload, an unfinished image, a queue); else only now and then.
export function scheduleNext(queued = 0) {
  schedule(busy() || queued > 0 ? POLL_BUSY_MS : POLL_IDLE_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") poll();
  else {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }
});
