// Talking to the medsight API from the page: the session cookie goes along by itself (same origin);
// every request that changes something carries the session's CSRF token, which only this page can read.

let csrfToken = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

// The API answers {"error": "..."} on every refusal; show that text, or say plainly what happened.
function errorText(status, body) {
  if (body && typeof body.error === "string") return body.error;
  if (status === 0) return "The server could not be reached. Check the connection and try again.";
  return `The server answered ${status} without an explanation.`;
}

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function headersFor(method, extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  return headers;
}

// JSON in, JSON out; throws ApiError with the server's words.
export async function api(path, { method = "GET", json } = {}) {
  const init = { method, credentials: "same-origin", headers: headersFor(method) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, errorText(0, null));
  }
  const body = parseJson(await response.text());
  if (!response.ok) throw new ApiError(response.status, errorText(response.status, body));
  return body;
}

// An upload with progress events (fetch has none for request bodies): resolves with the answer,
// as JSON or as a Blob, or rejects with ApiError.
export function upload(path, body, { onProgress, responseType = "json" } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.withCredentials = true;
    for (const [name, value] of Object.entries(headersFor("POST"))) xhr.setRequestHeader(name, value);
    xhr.responseType = responseType === "blob" ? "blob" : "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (onProgress && event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, errorText(0, null))));
    xhr.addEventListener("load", async () => {
      const ok = xhr.status >= 200 && xhr.status < 300;
      if (ok) {
        resolve(responseType === "blob" ? xhr.response : parseJson(xhr.response));
        return;
      }
      const text = responseType === "blob" ? await xhr.response.text() : xhr.response;
      reject(new ApiError(xhr.status, errorText(xhr.status, parseJson(text))));
    });
    xhr.send(body);
  });
}
