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

// Shows `error` in a form's status line, and says it through the live region.
export function showError(status, error) {
  status.textContent = error.message;
  status.className = 'error';
  announce(error.message);
}

// A moment (milliseconds since the epoch) in the reader's locale.
export function when(ms) { return new Date(ms).toLocaleString(); }

// "10:05" for today, else a short date and time, in the reader's locale.
export function clock(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
}

// Says `text` through the page's one polite live region (`#announcer`, in
// every page shell). Nothing else on a page is a live region, so a change
// is read once and the page is never re-read.
export function announce(text) {
  const region = document.getElementById('announcer');
  if (!region || !text) return;
  // Cleared first so the same sentence twice is still read.
  region.textContent = '';
  setTimeout(() => { region.textContent = text; }, 50);
}

// Keeps `parent`'s children in step with `items` without rebuilding them:
// one element per `key(item)`, made once by `create(item)` and brought up
// to date by `update(element, item)` (for new ones too); elements whose key
// is gone are removed, and the order follows `items`. Focus, selection and
// anything typed survive, because elements that stay are the same nodes.
export function reconcile(parent, items, key, create, update) {
  const have = new Map();
  for (const child of [...parent.children]) {
    if (child.dataset.key !== undefined) have.set(child.dataset.key, child);
  }
  let at = 0;
  const keep = new Set();
  for (const item of items) {
    const k = String(key(item));
    keep.add(k);
    let e = have.get(k);
    if (!e) { e = create(item); e.dataset.key = k; }
    update(e, item);
    const here = parent.children[at];
    if (here !== e) parent.insertBefore(e, here || null);
    at += 1;
  }
  for (const [k, e] of have) if (!keep.has(k)) e.remove();
}

// Sets an element's text only when it changed (so screen readers and
// selection are not disturbed by a render that changed nothing).
export function text(e, value) {
  const v = String(value ?? '');
  if (e.textContent !== v) e.textContent = v;
  return e;
}

// Sets or removes an attribute only when it changed.
export function attr(e, name, value) {
  if (value === null || value === undefined || value === false) {
    if (e.hasAttribute(name)) e.removeAttribute(name);
  } else {
    const v = value === true ? '' : String(value);
    if (e.getAttribute(name) !== v) e.setAttribute(name, v);
  }
  return e;
}

// An in-page modal dialog (the browser's <dialog>: focus moves into it,
// Escape closes it, the page behind is inert). With `field` it asks for
// text and resolves to it (null if cancelled or empty); without, it asks
// to confirm and resolves to true or false. Focus returns to what had it.
export function ask({ title, body, field, confirm = 'OK', cancel = 'Cancel', danger = false }) {
  return new Promise(resolve => {
    const returnTo = document.activeElement;
    const id = `dialog-${Math.random().toString(36).slice(2, 8)}`;
    const input = field ? el('textarea', { id: `${id}-text`, name: 'text', rows: '4', maxlength: String(field.max || 2000), required: true }) : null;
    const form = el('form', { method: 'dialog' },
      el('h2', { id: `${id}-title` }, title),
      body ? el('p', { id: `${id}-body` }, body) : null,
      input ? el('label', { for: `${id}-text` }, field.label) : null, input,
      el('div', { class: 'dialog-buttons' },
        el('button', { type: 'button', class: 'secondary', id: 'dialog-cancel', onclick: () => dialog.close('') }, cancel),
        el('button', { type: 'submit', id: 'dialog-confirm', class: danger ? 'danger' : undefined, value: 'ok' }, confirm)));
    const dialog = el('dialog', { 'aria-labelledby': `${id}-title`, 'aria-describedby': body ? `${id}-body` : undefined }, form);
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      if (input && !input.value.trim()) { input.focus(); return; }
      dialog.close('ok');
    });
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      dialog.remove();
      if (returnTo && returnTo.isConnected) returnTo.focus();
      resolve(field ? (ok ? input.value.trim() : null) : ok);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || form.querySelector('#dialog-confirm')).focus();
  });
}
