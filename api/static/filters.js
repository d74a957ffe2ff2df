// The filters: a status and a search, kept in the page's address, so that a reload or a shared
// link shows the same images.

import { $ } from "./dom.js";
import { loadFirstPage } from "./grid.js";
import { state } from "./state.js";

const SEARCH_DELAY_MS = 250;

export function readLocation() {
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
