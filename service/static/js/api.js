// The viewer's only door to Vigil: the public v1 API, with the session's key as a Bearer token.
//
// Images and video cannot carry an Authorization header when loaded through a src attribute, so
// they are fetched here as blobs and shown through object URLs (see blobUrl).

const KEY_STORAGE = "vigil.apiKey";

/** An error answer of the API (application/problem+json), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code || (status === 0 ? "network_error" : `http_${status}`);
    this.problem = problem || null;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** Build a query string from an object, dropping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "" || Number.isNaN(v)) continue;
    q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

let onUnauthorized = () => {};

/** Called when the key is refused (401): the app signs out. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function send(path, { method = "GET", body, headers = {}, key = storedKey(), signal } = {}) {
  const init = { method, headers: { ...headers }, signal, cache: "no-store" };
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { detail: `Vigil is unreachable (${err.message})` });
  }
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      problem = { title: response.statusText };
    }
    const error = new ApiError(response.status, problem);
    if (response.status === 401 && key === storedKey()) onUnauthorized(error);
    throw error;
  }
  return response;
}

/** GET/POST returning parsed JSON (null for 204). */
export async function json(path, options) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** A request whose Response the caller reads itself (status codes such as 202 matter). */
export function raw(path, options) {
  return send(path, options);
}

/** Walk a cursor-paginated list ({data, next_cursor}) and return every item (bounded). */
export async function all(path, params = {}, { maxPages = 20, signal } = {}) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const body = await json(path + query({ ...params, cursor }), { signal });
    items.push(...(body.data || []));
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/** Fetch an image or video with the key and return an object URL (caller revokes it). */
export async function blobUrl(path, { signal, onProgress } = {}) {
  const response = await send(path, { signal });
  if (!onProgress || !response.body) {
    return URL.createObjectURL(await response.blob());
  }
  const total = Number(response.headers.get("Content-Length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    onProgress(received, total);
  }
  const type = response.headers.get("Content-Type") || "application/octet-stream";
  return URL.createObjectURL(new Blob(chunks, { type }));
}

/**
 * Find what the key may do. Prefers GET /v1/me ({role, name}); where the API has no such
 * endpoint, probes: admin if GET /v1/admin/models answers, else viewer.
 */
export async function whoAmI(key) {
  try {
    const me = await json("/v1/me", { key });
    if (me && me.role) return { role: me.role, name: me.name || me.key_id || "", keyId: me.key_id || "" };
  } catch (err) {
    if (err.status === 401 || err.status === 0) throw err;
    if (err.status !== 404 && err.status !== 405) throw err;
  }
  await json("/v1/streams?limit=1", { key }); // 401 here: the key is not valid at all
  try {
    await json("/v1/admin/models?limit=1", { key });
    return { role: "admin", name: "", keyId: "" };
  } catch (err) {
    if (err.status === 403) return { role: "viewer", name: "", keyId: "" };
    throw err;
  }
}
