// Uploads: files picked or dropped, sent a few at a time; each row follows its image until it
// is processed.

import { getJSON, headersWith, imagePath, refusal } from "./api.js";
import { $, el } from "./dom.js";
import { FINISHED, hooks, state } from "./state.js";
import { withUploadToken } from "./token.js";

const UPLOADS_AT_ONCE = 2;

const uploadList = $("#uploads");
const waiting = [];
const uploadRows = []; // rows of uploads the server took, to follow their images
const asking = new Set(); // ids of images whose record is being asked for

function showImage(row, item) {
  const text = {
    pending: "waiting to be processed…",
    processing: "processing…",
    done: "done.",
    failed: `failed: ${item.error || "could not be processed"}`,
  }[item.status];
  setRowState(row, item.status === "failed" ? "error" : "done", `#${row.id} ${text}`);
  row.finished = FINISHED.has(item.status);
}

// An upload's row says what became of its image, until it is finished: as the grid knows it,
// or, when the view does not show it (the failed ones have their own), from its record.
export function updateUploads() {
  for (const row of uploadRows) {
    if (row.finished) continue;
    const item = state.items.get(row.id);
    if (item) {
      showImage(row, item);
    } else if (!asking.has(row.id)) {
      asking.add(row.id);
      getJSON(imagePath(row.id))
        .then((record) => showImage(row, record))
        .catch((error) => {
          if (error.status !== 404) return;
          setRowState(row, "error", `#${row.id} is gone: deleted.`);
          row.finished = true;
        })
        .finally(() => asking.delete(row.id));
    }
  }
}

// Whether an upload's image is still to be followed: the page keeps polling closely for it.
export const followingUploads = () => uploadRows.some((row) => !row.finished);

function send(file, row, token) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest(); // fetch cannot report upload progress
    xhr.open("POST", "api/images");
    for (const [name, value] of Object.entries(headersWith(token))) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) row.progress.value = Math.round((event.loaded / event.total) * 100);
    });
    xhr.upload.addEventListener("load", () => {
      row.progress.value = 100;
      setRowState(row, "waiting", "Sent; waiting for the daemon…");
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function setRowState(row, kind, text) {
  row.li.dataset.state = kind;
  row.state.textContent = text;
}

async function upload(file, row) {
  const result = await withUploadToken((token) => send(file, row, token),
    () => setRowState(row, "waiting", "Needs the upload token…"));
  if (result === null) {
    setRowState(row, "error", "Not uploaded: the server needs an upload token.");
    return;
  }
  const { status, body } = result;
  if (status === 202 && body && body.id !== null) {
    row.id = body.id;
    uploadRows.push(row);
    setRowState(row, "done", `#${body.id} received; ${body.status}.`);
  } else if (status === 202) {
    setRowState(row, "done", "Queued: the daemon will pick it up when it runs.");
  } else if (status === 200 && body && body.duplicate) {
    row.id = body.id;
    setRowState(row, "done", `Already here as #${body.id} (the same bytes).`);
  } else if (status === 0) {
    setRowState(row, "error", "Not uploaded: the server cannot be reached.");
  } else {
    setRowState(row, "error", `Not uploaded: ${refusal(result)}`);
  }
  row.progress.value = 100;
}

function addFiles(files) {
  for (const file of files) {
    const progress = el("progress", { max: 100, value: 0, "aria-label": `Upload of ${file.name}` });
    const stateText = el("span", { className: "state", text: "Waiting…" });
    const li = el("li", { "data-state": "queued" }, el("span", { className: "name", text: file.name, title: file.name }), progress, stateText);
    uploadList.prepend(li);
    waiting.push({ file, row: { li, progress, state: stateText, id: null, finished: false } });
  }
  pump();
}

function pump() {
  while (state.uploadsActive < UPLOADS_AT_ONCE && waiting.length) {
    const { file, row } = waiting.shift();
    state.uploadsActive += 1;
    setRowState(row, "sending", "Uploading…");
    upload(file, row).finally(() => {
      state.uploadsActive -= 1;
      pump();
      hooks.poll(); // show the new image at once
    });
  }
}

const fileInput = $("#file-input");
$("#pick").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  addFiles([...fileInput.files]);
  fileInput.value = "";
});

// Drops anywhere on the page; the overlay shows while files are dragged over it.
const overlay = $("#drop-overlay");
let dragDepth = 0;
const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  overlay.hidden = false;
});
document.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
document.addEventListener("dragleave", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) overlay.hidden = true;
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  overlay.hidden = true;
  addFiles([...event.dataTransfer.files]);
});
