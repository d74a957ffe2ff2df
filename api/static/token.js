// The upload token, for uploads and changes: asked for when the server refuses one, then kept
// for this tab, or on this device if asked to.

import { $ } from "./dom.js";

const TOKEN_KEY = "htx.uploadToken";

let tokenRequest = null;

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
}

function forgetToken(refused = null) {
  // Only the token that was refused: another upload may have stored a new one meanwhile.
  if (refused !== null && storedToken() !== refused) return;
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

// Signing out forgets it too: the next person at this browser is asked again.
export const forgetUploadToken = () => forgetToken();

// One question at a time, however many uploads were refused at once.
function askForToken(rejected) {
  if (!tokenRequest) {
    tokenRequest = new Promise((resolve) => {
      const tokenDialog = $("#token-dialog");
      $("#token-reason").textContent = rejected
        ? "That token was not accepted. Try again:"
        : "This server needs its upload token (api.upload_token) for uploads and changes.";
      $("#token").value = "";
      tokenDialog.addEventListener("close", () => {
        const token = $("#token").value.trim();
        if (tokenDialog.returnValue === "ok" && token) {
          forgetToken();
          ($("#token-remember").checked ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
          resolve(token);
        } else {
          resolve(null);
        }
        tokenRequest = null;
      }, { once: true });
      tokenDialog.returnValue = "";
      tokenDialog.showModal();
    });
  }
  return tokenRequest;
}

// `send(token)` (the stored token, or null) until the server does not refuse it for the token:
// after a refusal, asks for one (once for any number of requests at a time). Its last answer,
// or null when no token was given. `onRefused` says what is being waited for meanwhile.
export async function withUploadToken(send, onRefused = () => {}) {
  let rejected = false;
  for (;;) {
    const token = storedToken();
    const result = await send(token);
    if (result.status !== 401) return result;
    if (token) forgetToken(token);
    onRefused();
    const again = storedToken() || await askForToken(rejected || Boolean(token));
    rejected = true;
    if (!again) return null;
  }
}
