// How a search matches: by meaning (match=auto: the images whose captions come closest to the
// words, best first, those holding the exact words before the rest) where the server searches
// by meaning, or by the exact words (match=words, or no match at all: the server's default,
// newest first) with the "Exact words" toggle on, or where it does not.

import { $ } from "./dom.js";
import { state } from "./state.js";

const PLACEHOLDER_WORDS = "words in captions and file names";
const PLACEHOLDER_MEANING = "what the picture shows, or a file name";

// Whether this server searches by meaning now: its statistics say so (none yet: not known,
// so not), some caption has its embedding to compare with, and no search by meaning failed
// here (the model could not be loaded).
export function meaningAvailable() {
  const search = state.stats && state.stats.search;
  if (!search || !search.enabled || state.meaningOK === false) return false;
  return search.embedded !== 0; // nothing embedded yet: meaning would find nothing at all
}

// The match parameter a search sends now: "auto", "words", or null for none (no search, or a
// server that does not search by meaning: its default, as ever).
export function searchMatch() {
  if (!state.q.trim() || !meaningAvailable()) return null;
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
  $("#exact-label").hidden = !available;
  $("#exact").checked = state.exact;
  $("#q").placeholder = available && !state.exact ? PLACEHOLDER_MEANING : PLACEHOLDER_WORDS;
  $("#search-note").textContent = state.meaningOK === false && state.q.trim()
    ? "Search by meaning is not available now: by the exact words." : "";
  const order = $("#order");
  order.disabled = byMeaning();
  if (byMeaning()) order.title = "A search by meaning comes best match first";
  else order.removeAttribute("title");
}
