// Acting on the open image: download, process or caption again, delete.

import { change, imagePath, refusal } from "./api.js";
import { $, el } from "./dom.js";
import { layout } from "./grid.js";
import { canReprocess } from "./image.js";
import { FINISHED, hooks, state } from "./state.js";
import { refreshStats } from "./stats.js";
import { withUploadToken } from "./token.js";

const ACTIONS = {
  reprocess: { method: "POST", path: (id) => `${imagePath(id)}/reprocess`, done: "Queued: it is processed again shortly." },
  recaption: { method: "POST", path: (id) => `${imagePath(id)}/recaption`, done: "Queued: it is captioned again shortly." },
  delete: { method: "DELETE", path: imagePath, done: "Deleted." },
};

// Retry (process again) only where it can change the outcome; where it cannot, why not.
export function actionsOf(record) {
  const finished = FINISHED.has(record.status);
  const retry = finished && canReprocess(record);
  const button = (action, text, className = "") =>
    el("button", { type: "button", "data-action": action, className, text });
  return el("div", { className: "actions" },
    record.status === "done" ? button("view", "View full size", "primary") : null,
    finished ? el("a", { href: `${imagePath(record.id)}/original`, download: "", className: "button", text: "Download original" }) : null,
    retry ? button("reprocess", record.status === "failed" ? "Retry" : "Process again") : null,
    record.status === "done" && !state.captionNote ? button("recaption", "Caption again") : null,
    finished ? button("delete", "Delete", "danger") : null,
    record.status === "failed" && !retry
      ? el("p", { className: "why-not", text: "Processing it again would fail the same way: the file itself is the problem. Delete it, or drop a good copy into the inbox." })
      : null,
    el("p", { id: "detail-action-state", role: "status" }));
}

// One request, with the upload token once the server asks for it (the same question as uploads).
export async function act(action, id) {
  const { method, path, done } = ACTIONS[action];
  const say = (text) => { const line = $("#detail-action-state"); if (line) line.textContent = text; };
  const result = await withUploadToken((token) => change(method, path(id), token));
  if (result === null) {
    say("Not done: the server needs its upload token.");
    return;
  }
  if (result.status === 0) {
    say("The server cannot be reached.");
    return;
  }
  if (result.status >= 400) {
    say(`Not done: ${refusal(result)}`);
    return;
  }
  if (action === "delete") {
    hooks.closeDetail();
    state.items.delete(id);
    state.order = state.order.filter((shown) => shown !== id);
    layout();
    refreshStats().catch(() => {});
    return;
  }
  // Its new state (pending), then followed until it is finished again, as any unfinished one.
  try {
    await hooks.reloadDetail(id);
  } catch {
    // the list's next poll shows it
  }
  say(done);
  hooks.poll();
}
