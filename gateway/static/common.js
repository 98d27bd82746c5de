// What every page of Chaperone shares: building elements, asking the
// gateway's API (and the review service, same origin) for JSON, showing a
// refusal, formatting a moment. Plain ES module, no build step. It holds no
// page state and never decides anything: the server decides, the pages show.

// An element: `attrs` are attributes, except `class` (the class name) and
// `on…` (event listeners); an attribute that is undefined, null or false is
// left out, and true is an empty (boolean) attribute. Children are nodes or
// text; null and undefined children are skipped.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// One same-origin request: without `body` a GET, with one a POST of it as
// JSON (`method` overrides either). Resolves to the response, whatever its
// status; rejects only when no response came.
export function request(path, body, method) {
  const init = body === undefined
    ? { method: method || 'GET' }
    : { method: method || 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
  return fetch(path, { credentials: 'same-origin', ...init });
}

// `request`, then the response's JSON. A refusal throws an Error with the
// server's message, its error code (`code`) and the HTTP status (`status`).
export async function api(path, body, method) {
  const res = await request(path, body, method);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = new Error(data.message || `request failed (${res.status})`);
    e.code = data.error;
    e.status = res.status;
    throw e;
  }
  return data;
}

// Shows `error` in a form's status line.
export function showError(status, error) {
  status.textContent = error.message;
  status.className = 'error';
}

// A moment (milliseconds since the epoch) in the reader's locale.
export function when(ms) { return new Date(ms).toLocaleString(); }
