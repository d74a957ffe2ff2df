// What the page shows and what it is doing: one object, shared by every module.

export const FINISHED = new Set(["done", "failed"]);

export const state = {
  status: "",
  q: "",
  items: new Map(), // id -> list item, as GET /api/images gives it
  order: [], // ids shown, newest first
  cursor: null, // next_cursor of the last page loaded; null: no more pages
  generation: 0, // bumped when the filter changes, so late answers for the old one are dropped
  loading: false,
  captionNote: "", // from /api/stats: why no image gets a caption now, and the fix ("": they do)
  total: null, // from /api/stats: every image, whatever the filter
  detailId: null,
  detailPushed: false, // the detail's ?image= was pushed on the history: Back closes it
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
  poll: unfilled("poll"),
  updateUploads: unfilled("updateUploads"),
};
