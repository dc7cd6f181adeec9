// Talking to the review server: JSON in and out, the token and the write header on every call,
// and a retry while another facesmith command holds the faceset (503 busy).

const token = new URLSearchParams(location.search).get("token");

function headers(extra = {}) {
  const h = { ...extra };
  if (token) h["X-Facesmith-Token"] = token;
  return h;
}

export class ApiError extends Error {}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function call(url, options, onBusy) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, { credentials: "same-origin", ...options });
    if (response.status === 503 && attempt < 20) {
      if (onBusy) onBusy(attempt);
      await pause(Math.min(500 * (attempt + 1), 3000));
      continue;
    }
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (!response.ok) throw new ApiError((body && body.error) || `${response.status} ${response.statusText}`);
    return body;
  }
}

export function getJson(url, onBusy) {
  return call(url, { headers: headers() }, onBusy);
}

export function postJson(url, value, onBusy) {
  return call(url, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", "X-Facesmith-Request": "review" }),
    body: JSON.stringify(value),
  }, onBusy);
}

export const thumbnailUrl = (id) => `/api/thumbnails/${encodeURIComponent(id)}`;
export const cropUrl = (id) => `/api/crops/${encodeURIComponent(id)}`;
export const sourceUrl = (id) => `/api/sources/${encodeURIComponent(id)}`;
export const faceUrl = (id) => `/api/faces/${encodeURIComponent(id)}`;
