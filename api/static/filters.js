// The filters: a status (every image but the failed ones, by default: those have a view of
// their own, behind the failed banner), a search (by meaning where the server can, or by the
// exact words: ?match=words) and an order, kept in the page's address, so that a reload or a
// shared link shows the same images.

import { $ } from "./dom.js";
import { loadFirstPage } from "./grid.js";
import { updateSearchControls } from "./search.js";
import { STATUSES, state } from "./state.js";

const SEARCH_DELAY_MS = 250;

export function readLocation() {
  const params = new URLSearchParams(location.search);
  state.status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  state.q = params.get("q") || "";
  state.sort = params.get("order") === "taken" ? "taken" : "received";
  state.exact = params.get("match") === "words";
  $("#q").value = state.q;
  $("#exact").checked = state.exact;
  $("#order").value = state.sort === "taken" ? "taken" : "";
  for (const radio of document.querySelectorAll('input[name="status"]')) radio.checked = radio.value === state.status;
  updateFailedBanner();
}

function writeLocation() {
  const params = new URLSearchParams(location.search);
  for (const name of ["status", "q", "match", "order"]) params.delete(name);
  if (state.status) params.set("status", state.status);
  if (state.q.trim()) params.set("q", state.q.trim());
  if (state.exact) params.set("match", "words"); // by meaning, the default, leaves the address as it was
  if (state.sort === "taken") params.set("order", "taken");
  params.delete("image"); // a filter changes while no detail is open
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function applyFilters() {
  writeLocation();
  updateFailedBanner();
  loadFirstPage();
}

// In the default view, how many failed (from the statistics) and the way to see them; in the
// failed view, the way back.
export function updateFailedBanner() {
  const failed = state.stats ? state.stats.by_status.failed : 0;
  const banner = $("#failed-banner");
  const toggle = $("#failed-toggle");
  if (state.status === "failed") {
    $("#failed-text").textContent = failed
      ? `${failed.toLocaleString()} failed: files that could not be processed, each with the reason.`
      : "No image failed.";
    toggle.textContent = "Back to the images";
    banner.hidden = false;
  } else {
    $("#failed-text").textContent = `${failed.toLocaleString()} failed`;
    toggle.textContent = "Show them";
    banner.hidden = state.status !== "" || failed === 0;
  }
  banner.dataset.view = state.status === "failed" ? "failed" : "images";
}

function showStatus(status) {
  state.status = status;
  for (const radio of document.querySelectorAll('input[name="status"]')) radio.checked = radio.value === status;
  applyFilters();
}

$("#failed-toggle").addEventListener("click", () => showStatus(state.status === "failed" ? "" : "failed"));

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
  radio.addEventListener("change", () => showStatus(radio.value));
}
$("#exact").addEventListener("change", () => {
  state.exact = $("#exact").checked;
  if (state.q.trim()) applyFilters();
  else { // nothing searched: the list stays as it is
    writeLocation();
    updateSearchControls();
  }
});
$("#order").addEventListener("change", () => {
  state.sort = $("#order").value === "taken" ? "taken" : "received";
  applyFilters();
});
