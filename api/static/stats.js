// The statistics panel, from /api/stats, which also says why no image gets a caption now: once,
// in the caption banner (the tiles stay quiet about it), and whether a search can go by meaning.

import { getJSON } from "./api.js";
import { $, formatMs } from "./dom.js";
import { updateFailedBanner } from "./filters.js";
import { loadFirstPage, updateSummary } from "./grid.js";
import { searchMatch } from "./search.js";
import { state } from "./state.js";

const BANNER_HIDDEN_KEY = "htx.captionBannerHidden"; // the note whose banner was hidden

// Why no image gets a caption now, with the fix: one line, from /api/stats' caption object.
function captionNoteOf(caption) {
  if (caption.available || !caption.reason) return "";
  if (!caption.fix) return `Captions are on their way: ${caption.reason}. Images get theirs once the model is ready.`;
  return `Captions off: ${caption.reason}. To fix: ${caption.fix}.`;
}

// The Captions tile holds a word or a short name; the whole of it is in its title.
function captionTile(caption) {
  if (caption.available) {
    const runtime = caption.runtime ? `, ${caption.runtime}` : "";
    const model = caption.model || "?";
    return { text: model.split("/").filter(Boolean).pop() || model, title: `${model} (${caption.device || "?"}${runtime})` };
  }
  // No fix to give: the model is on its way (loading, or compiled on a first start), not off.
  return { text: caption.reason && !caption.fix ? "preparing…" : "off", title: state.captionNote };
}

function showCaptionBanner() {
  const note = state.captionNote;
  $("#caption-banner-text").textContent = note;
  $("#caption-banner").hidden = !note || localStorage.getItem(BANNER_HIDDEN_KEY) === note;
}

$("#caption-banner-hide").addEventListener("click", () => {
  localStorage.setItem(BANNER_HIDDEN_KEY, state.captionNote);
  $("#caption-banner").hidden = true;
});

export async function refreshStats() {
  const stats = await getJSON("api/stats");
  state.stats = stats;
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
  const tile = captionTile(stats.caption);
  set("caption", tile.text);
  document.querySelector('[data-stat="caption"]').title = tile.title;
  showCaptionBanner();
  updateFailedBanner();
  updateSummary();
  // Search by meaning came (a first caption embedded) or went since the search shown: again.
  if (state.generation > 0 && searchMatch() !== state.match) loadFirstPage();
  return stats;
}
