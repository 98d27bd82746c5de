// What the lesson browser scripts check on a page, in one place: waiting
// for a page state, media arriving, decoded or stopped at a receiver (from
// the page's getStats, `window.chaperone.inbound()`), and the server's
// word that a source is no longer forwarded.

export const sleep = ms => new Promise(r => setTimeout(r, ms));
export function step(name, data = {}) { console.log(JSON.stringify({ step: name, ...data })); }
export function expect(cond, message) { if (!cond) throw new Error(`expectation failed: ${message}`); }

export async function waitFor(page, fn, arg, what, timeout = 20000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch (e) {
    const state = await page.evaluate(() => ({ state: document.body.dataset.lessonState, notice: document.getElementById('notice')?.textContent, error: document.body.dataset.lastError })).catch(() => ({}));
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(state)}`);
  }
}

// Inbound bytes at `page` from tracks whose id starts with `prefix`.
export async function inboundBytes(page, prefix) {
  const rows = await page.evaluate(() => window.chaperone.inbound());
  return rows.filter(r => (r.track || '').startsWith(prefix)).reduce((n, r) => n + r.bytes, 0);
}

export async function framesFrom(page, prefix) {
  const rows = await page.evaluate(() => window.chaperone.inbound());
  return rows.filter(r => (r.track || '').startsWith(prefix)).reduce((n, r) => n + r.frames, 0);
}

// Polls (from here, not in the page) until `page` has decoded a frame of `prefix`.
export async function decoding(page, prefix, what, timeout = 60000) {
  const until = Date.now() + timeout;
  while (Date.now() < until) {
    const frames = await framesFrom(page, prefix);
    if (frames > 0) return frames;
    await sleep(250);
  }
  throw new Error(`nothing decoded: ${what}`);
}

// Waits until bytes from `prefix` at `page` grow.
export async function growing(page, prefix, what) {
  const start = await inboundBytes(page, prefix);
  for (let i = 0; i < 60; i++) {
    await sleep(250);
    const now = await inboundBytes(page, prefix);
    if (now > start) return now;
  }
  throw new Error(`no media arriving: ${what}`);
}

// Checks that bytes from `prefix` at `page` stop growing (after a settle time).
export async function stopped(page, prefix, what) {
  await sleep(1500);
  const a = await inboundBytes(page, prefix);
  await sleep(2000);
  const b = await inboundBytes(page, prefix);
  expect(b === a, `${what}: still receiving (${a} -> ${b} bytes)`);
  return b;
}

// Waits until the server reports, in the teacher's roster, that `source` of
// every pupil in `ids` is no longer forwarded: the control took effect.
export async function notForwarded(teacher, ids, source, what) {
  await waitFor(teacher, ([ids, source]) => ids.every(id => {
    const p = window.chaperone.roster.find(r => r.id === id);
    return p && !p.forwarded.includes(source);
  }), [ids, source], what);
}
