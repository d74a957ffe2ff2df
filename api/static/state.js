// What the page shows and what it is doing: one object, shared by every module.

export const FINISHED = new Set(["done", "failed"]);
export const STATUSES = ["pending", "processing", "done", "failed"];
// The default view: every image but the failed ones, which have a view of their own.
export const DEFAULT_STATUSES = ["pending", "processing", "done"];

export const state = {
  status: "", // "": the default view (DEFAULT_STATUSES); else one of STATUSES
  q: "",
  exact: false, // the "Exact words" toggle: a search by the words as written, not by meaning
  match: null, // the match parameter of the list shown ("auto", "words"; null: none sent)
  sort: "received", // "received" (arrival, newest first) or "taken" (capture time, newest first)
  items: new Map(), // id -> list item, as GET /api/images gives it
  order: [], // ids shown, in the list's order
  cursor: null, // next_cursor of the last page loaded; null: no more pages
  generation: 0, // bumped when the filter changes, so late answers for the old one are dropped
  loading: false,
  captionNote: "", // from /api/stats: why no image gets a caption now, and the fix ("": they do)
  stats: null, // the last /api/stats answer
  total: null, // from /api/stats: every image, whatever the filter
  // What this server's API takes (null: not known yet; false: it answered 400, so the page
  // does without: the failed ones dropped here, the default order).
  statusListOK: null,
  takenOrderOK: null,
  meaningOK: null, // false: a search by meaning failed here (its model cannot be loaded)
  detailId: null,
  detailPushed: false, // the detail's ?image= was pushed on the history: Back closes it
  selecting: false, // the grid's select mode: a click on a tile selects it
  selected: new Set(), // ids selected in select mode
  uploadsActive: 0,
  pollTimer: null,
};

// What a module calls in a module above it, which imports it: gallery.js fills these in at
// start-up (before any event can fire), so imports only ever go one way.
// Until then each throws, naming itself: a hook left unfilled is a bug, never a silent no-op.
const unfilled = (name) => () => {
  throw new Error(`gallery: hooks.${name} was not filled in`);
};
export const hooks = {
  openDetail: unfilled("openDetail"),
  reloadDetail: unfilled("reloadDetail"),
  closeDetail: unfilled("closeDetail"),
  toggleSelected: unfilled("toggleSelected"),
  updateSelection: unfilled("updateSelection"),
  poll: unfilled("poll"),
  updateUploads: unfilled("updateUploads"),
};
