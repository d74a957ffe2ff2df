// Signing out, where the server needs its read token (api.read_token). The page came with the
// sign-in cookie, which no script can read (HttpOnly): whether the server needs a token is
// whether it refuses a request without one. Signing out clears the cookie (POST api/session
// with sign_out) and the upload token kept here; the page, loaded again, asks for the token.

import { $ } from "./dom.js";
import { showNotice } from "./grid.js";
import { forgetUploadToken } from "./token.js";

export async function checkSession() {
  try {
    const response = await fetch("api/ping", { credentials: "omit", cache: "no-store" });
    $("#sign-out").hidden = response.status !== 401;
  } catch {
    // not reached: the next load says
  }
}

$("#sign-out").addEventListener("click", async () => {
  forgetUploadToken();
  try {
    const response = await fetch("api/session", { method: "POST", body: new URLSearchParams({ sign_out: "1" }) });
    if (!response.ok) throw new Error(`The server answered ${response.status}.`);
  } catch (error) {
    showNotice(`Not signed out: ${error.message}`);
    return;
  }
  location.reload();
});
