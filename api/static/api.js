// The JSON API of the same server: what the page reads, and the changes it sends with the
// upload token.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch {
    throw new ApiError(0, "The server cannot be reached.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `The server answered ${response.status}.`);
  }
  return body;
}

export const imagePath = (id) => `api/images/${id}`;
export const thumbnailPath = (id, size) => `api/images/${id}/thumbnails/${size}`;

// A request's headers, with the upload token when there is one (null: none asked for yet).
export function headersWith(token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// A change as its status and body, for withUploadToken (status 0: the server was not reached).
export async function change(method, path, token) {
  try {
    const response = await fetch(path, { method, headers: headersWith(token) });
    let body = null;
    try { body = await response.json(); } catch { /* not JSON (a 204) */ }
    return { status: response.status, body };
  } catch {
    return { status: 0, body: null };
  }
}

// A change with a JSON body, as `change` answers it.
export async function sendJSON(method, path, body, token) {
  const headers = { ...headersWith(token), "Content-Type": "application/json" };
  try {
    const response = await fetch(path, { method, headers, body: JSON.stringify(body) });
    let answer = null;
    try { answer = await response.json(); } catch { /* not JSON */ }
    return { status: response.status, body: answer };
  } catch {
    return { status: 0, body: null };
  }
}

// Why the server refused a change or an upload, to follow "Not done: " or "Not uploaded: ".
export const refusal = ({ status, body }) => (body && body.error) || `the server answered ${status}.`;
