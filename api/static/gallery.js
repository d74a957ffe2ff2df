// HTX gallery: the images of the inbox, over the public JSON API of the same server.
//
// Plain JavaScript, no build step and no library. Every text that comes from the API (file
// names, captions, EXIF: the corpus has a file name with PHP in it) reaches the page through
// textContent or an attribute, never as markup. URLs are relative to the page, so the
// gallery works under a path prefix behind a proxy as well as at the root.
//
// An ES module for each part of the page, each wiring its own elements as it loads; this one
// connects the modules' calls upwards (state.hooks), reads the address, then loads the
// statistics and the first page, and starts polling.

import { dialog, locationImage, openDetail, reloadDetail } from "./detail.js";
import { readLocation } from "./filters.js";
import { loadFirstPage } from "./grid.js";
import { poll, scheduleNext } from "./live.js";
import { toggleSelected, updateSelection } from "./select.js";
import { checkSession } from "./session.js";
import { hooks, state } from "./state.js";
import { refreshStats } from "./stats.js";
import { updateUploads } from "./uploads.js";

Object.assign(hooks, {
  openDetail, reloadDetail, closeDetail: () => dialog.close(), toggleSelected, updateSelection, poll, updateUploads,
});
readLocation();
window.addEventListener("popstate", () => {
  const filters = [state.status, state.q, state.sort, state.exact];
  readLocation();
  if (filters.some((value, index) => value !== [state.status, state.q, state.sort, state.exact][index])) loadFirstPage();
  const id = locationImage();
  if (id !== null) openDetail(id, { fromLocation: true });
  else if (dialog.open) {
    state.detailPushed = false; // Back has taken the address already
    dialog.close();
  }
});
checkSession();
refreshStats().catch(() => {}).finally(async () => {
  await loadFirstPage();
  const id = locationImage();
  if (id !== null) openDetail(id, { fromLocation: true });
  scheduleNext();
});
