// The full-size view: an image's original, from the API, fit to the screen; zoomed with + and
// −, a double click, the wheel or two fingers; ← and → (or a swipe) for the previous or next
// image of the list, whose detail, behind, follows; Esc closes it, and the focus goes back.

import { imagePath } from "./api.js";
import { $ } from "./dom.js";
import { loadMore } from "./grid.js";
import { hooks, state } from "./state.js";
import { Zoom } from "./zoom.js";

const ZOOM_STEP = 1.5;

const viewer = $("#viewer");
const image = $("#viewer-image");
const say = (text) => { $("#viewer-state").textContent = text; };
const zoom = new Zoom($("#viewer-stage"), image, {
  onSwipe: (offset) => step(offset),
  // Zoomed, the Fit button says by how much.
  onChange: (scale) => {
    const fit = $("#viewer-fit");
    $("#viewer-out").disabled = scale <= 1;
    fit.disabled = scale <= 1;
    fit.textContent = scale > 1 ? `${Math.round(scale * 100)} %` : "Fit";
    fit.setAttribute("aria-label", scale > 1 ? `Zoomed to ${Math.round(scale * 100)} %: fit to the screen` : "Fit to the screen");
  },
});
let shownId = null;
let shownItem = null; // what is known of it: the list's item, or the detail's record
let returnFocusTo = null;

export const originalPath = (id) => `${imagePath(id)}/original`;

// The images of the list whose original can be shown: the processed ones.
const viewable = () => state.order.filter((id) => state.items.get(id)?.status === "done");

function neighbour(offset) {
  const ids = viewable();
  const index = ids.indexOf(shownId);
  return index < 0 ? undefined : ids[index + offset];
}

function show(id, item) {
  shownId = id;
  shownItem = item ?? state.items.get(id) ?? { id, filename: `Image ${id}` };
  const ids = viewable();
  const index = ids.indexOf(id);
  $("#viewer-title").textContent = shownItem.filename;
  $("#viewer-position").textContent = index < 0 ? "" : `${index + 1} of ${ids.length}${state.cursor ? "+" : ""}`;
  $("#viewer-prev").disabled = index <= 0;
  $("#viewer-next").disabled = index < 0 || (index >= ids.length - 1 && !state.cursor);
  zoom.reset();
  say("Loading the original…");
  image.alt = shownItem.caption || shownItem.filename;
  image.dataset.id = String(id);
  image.src = originalPath(id);
  // The next one is likely wanted next: the browser has it by then.
  const next = neighbour(1);
  if (next !== undefined) new Image().src = originalPath(next);
}

async function step(offset) {
  if (shownId === null) return;
  let next = neighbour(offset);
  if (next === undefined && offset > 0 && state.cursor && await loadMore()) next = neighbour(offset);
  if (next === undefined || !viewer.open) return;
  show(next);
  hooks.openDetail(next); // the detail behind shows it too, and the address says it
}

export function openViewer(id, item) {
  if (!viewer.open) returnFocusTo = document.activeElement;
  show(id, item);
  if (!viewer.open) viewer.showModal();
  $("#viewer-stage").focus();
}

image.addEventListener("load", () => {
  if (Number(image.dataset.id) === shownId) say("");
});
image.addEventListener("error", () => {
  if (shownId !== null && image.getAttribute("src")) say("The original cannot be shown here: download it from the detail.");
});

$("#viewer-close").addEventListener("click", () => viewer.close());
$("#viewer-prev").addEventListener("click", () => step(-1));
$("#viewer-next").addEventListener("click", () => step(1));
$("#viewer-in").addEventListener("click", () => zoom.by(ZOOM_STEP));
$("#viewer-out").addEventListener("click", () => zoom.by(1 / ZOOM_STEP));
$("#viewer-fit").addEventListener("click", () => zoom.reset());
viewer.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const act = {
    ArrowLeft: () => step(-1),
    ArrowRight: () => step(1),
    "+": () => zoom.by(ZOOM_STEP),
    "=": () => zoom.by(ZOOM_STEP),
    "-": () => zoom.by(1 / ZOOM_STEP),
    0: () => zoom.reset(),
  }[event.key];
  if (!act) return;
  event.preventDefault();
  act();
});
window.addEventListener("resize", () => {
  if (viewer.open) zoom.apply();
});
viewer.addEventListener("close", () => {
  shownId = null;
  shownItem = null;
  image.removeAttribute("src"); // stop loading a large original nobody looks at now
  say("");
  // Its opener, or (the detail behind having moved on with it) the detail's own button.
  const target = returnFocusTo && returnFocusTo.isConnected ? returnFocusTo : $('#detail-body [data-action="view"]');
  returnFocusTo = null;
  if (target) target.focus();
});
