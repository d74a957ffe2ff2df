// The statistics panel, from /api/stats, which also says why no image gets a caption now.

import { getJSON } from "./api.js";
import { formatMs } from "./dom.js";
import { updateSummary } from "./grid.js";
import { state } from "./state.js";

// Why no image gets a caption now, with the fix: one line, from /api/stats' caption object.
function captionNoteOf(caption) {
  if (caption.available || !caption.reason) return "";
  if (!caption.fix) return `No caption yet: ${caption.reason}.`;
  return `Captions off: ${caption.reason}. To fix: ${caption.fix}.`;
}

export async function refreshStats() {
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
