// One image as the grid and the detail both show it: its thumbnail, and the line under it.

import { thumbnailPath } from "./api.js";
import { el } from "./dom.js";
import { state } from "./state.js";

// Why an image shows no caption, or what its caption is; `why` marks an explanation.
export function captionOf(item) {
  if (item.status === "failed") return { text: item.error || "Processing failed.", kind: "error" };
  if (item.caption) return { text: item.caption, kind: "caption" };
  if (item.status === "pending") return { text: "Waiting to be processed…", kind: "why" };
  if (item.status === "processing") {
    return { text: item.thumbnails && item.thumbnails.small ? "Captioning…" : "Processing…", kind: "why" };
  }
  // Done, its caption made later (the model is being prepared, or captions another image first).
  if (item.caption_status === "pending") return { text: "Caption coming…", kind: "why" };
  if (state.captionNote) return { text: state.captionNote, kind: "why" };
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
