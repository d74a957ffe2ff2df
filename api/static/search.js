// How a search matches: by meaning (match=auto: the images whose captions come closest to the
// words, best first, those holding the exact words before the rest) where the server searches
// by meaning, or by the exact words (match=words, or no match at all: the server's default,
// newest first) with the "Exact words" toggle on, or where it does not.

import { $ } from "./dom.js";
import { state } from "./state.js";

const PLACEHOLDER_WORDS = "words in captions and file names";
const PLACEHOLDER_MEANING = "what the picture shows, or a file name";
const EXACT_TITLE = "Find the words as written, newest first, instead of by meaning";

// Whether this server searches by meaning now: its statistics say so (none yet: not known,
// so not), some caption has its embedding to compare with, and no search by meaning failed
// here (the model could not be loaded).
export function meaningAvailable() {
  const search = state.stats && state.stats.search;
  if (!search || !search.enabled || state.meaningOK === false) return false;
  return search.embedded !== 0; // nothing embedded yet: meaning would find nothing at all
}

// Only done images have a caption's meaning: the views of the others search their words.
const viewHasMeaning = () => !state.status || state.status === "done";

// The match parameter a search sends now: "auto", "words", or null for none (no search, or a
// server that does not search by meaning, or a view it cannot: its default, as ever).
export function searchMatch() {
  if (!state.q.trim() || !meaningAvailable() || !viewHasMeaning()) return null;
  return state.exact ? "words" : "auto";
}

// Whether the list shown (or loading) comes by meaning, best match first.
export const byMeaning = () => state.match === "auto";

// A tile's tooltip: how close it came (by match=auto, score + 1 for an exact words' match).
export function scoreTitle(item) {
  if (typeof item.score !== "number") return null;
  if (item.score > 1) return `match ${(item.score - 1).toFixed(2)}, with the exact words`;
  return `match ${item.score.toFixed(2)}`;
}

// The toggle next to the search box (only where meaning is there to toggle from), the box's
// hint, and the order, which a search by meaning does not follow: it comes best match first.
export function updateSearchControls() {
  const available = meaningAvailable();
  const label = $("#exact-label");
  label.hidden = !available;
  $("#exact").checked = state.exact;
  $("#exact").disabled = !viewHasMeaning();
  label.title = viewHasMeaning() ? EXACT_TITLE : `${EXACT_TITLE}: in this view, always (only done images are searched by meaning)`;
  $("#q").placeholder = available && viewHasMeaning() && !state.exact ? PLACEHOLDER_MEANING : PLACEHOLDER_WORDS;
  $("#search-note").textContent = state.meaningOK === false && state.q.trim()
    ? "Search by meaning is not available now: by the exact words." : "";
  const order = $("#order");
  order.disabled = byMeaning();
  if (byMeaning()) order.title = "A search by meaning comes best match first";
  else order.removeAttribute("title");
}
