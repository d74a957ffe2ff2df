// One image as the grid and the detail both show it: its thumbnail, the line under it, and
// what can still be done with it.

import { thumbnailPath } from "./api.js";
import { el } from "./dom.js";
import { state } from "./state.js";

// The kinds of failure that processing the same bytes again cannot change (the file itself is
// the problem), for a server whose records do not say can_reprocess yet.
const FINAL_ERRORS = new Set(["too_large", "unsupported", "corrupt", "missing"]);
const ERROR_WORDS = {
  too_large: "the image is too large",
  unsupported: "the file is not a JPEG or PNG image",
  corrupt: "the file is damaged",
  missing: "the file went missing before it was processed",
  internal: "the server could not process it",
};

// Whether processing it again can change its outcome (a finished image only).
export function canReprocess(item) {
  if (typeof item.can_reprocess === "boolean") return item.can_reprocess;
  if (item.status !== "failed") return item.status === "done";
  return !FINAL_ERRORS.has(item.error_kind);
}

// Why it failed, in words: the record's own, else its kind said as words, never the code.
export function failureOf(item) {
  if (item.error) return item.error;
  return ERROR_WORDS[item.error_kind] ? `Failed: ${ERROR_WORDS[item.error_kind]}.` : "Processing failed.";
}

// The line under an image: its caption, or where it stands; null for nothing to say. While no
// caption is made (captions off, the model on its way) the page says so once, in its banner:
// the tiles stay quiet about it.
export function captionOf(item) {
  if (item.status === "failed") return { text: failureOf(item), kind: "error" };
  if (item.caption) return { text: item.caption, kind: "caption" };
  if (item.status === "pending") return { text: "Waiting to be processed…", kind: "why" };
  if (item.status === "processing") {
    const captioning = item.thumbnails && item.thumbnails.small && !state.captionNote;
    return { text: captioning ? "Captioning…" : "Processing…", kind: "why" };
  }
  if (state.captionNote) return null;
  // Done, its caption made later (the model captions another image first).
  if (item.caption_status === "pending") return { text: "Caption coming…", kind: "why" };
  if (item.caption_error) return { text: `No caption: ${item.caption_error}`, kind: "why" };
  return { text: "No caption", kind: "why" };
}

export function thumbnailOf(item, big = false) {
  const box = el("span", { className: "thumb" });
  const alt = item.caption || item.filename;
  if (item.thumbnails && item.thumbnails.small) {
    const img = el("img", {
      alt,
      src: thumbnailPath(item.id, big ? "medium" : "small"),
      srcset: big ? null : `${thumbnailPath(item.id, "small")} 1x, ${thumbnailPath(item.id, "medium")} 2x`,
      loading: big ? null : "lazy",
      decoding: "async",
    });
    img.addEventListener("error", () => {
      img.replaceWith(el("span", { className: "placeholder", text: "Thumbnail unavailable" }));
    }, { once: true });
    box.append(img);
  } else if (item.status === "failed") {
    box.append(el("span", { className: "placeholder", role: "img", "aria-label": `${item.filename}: no thumbnail` },
      el("span", { className: "glyph", "aria-hidden": "true", text: "⊘" }),
      el("span", { "aria-hidden": "true", text: "No thumbnail" })));
  } else {
    // Still to come: the caption line below says what the image is waiting for.
    box.append(el("span", { className: "placeholder", "aria-hidden": "true" }, el("span", { className: "spinner" })));
  }
  return box;
}
