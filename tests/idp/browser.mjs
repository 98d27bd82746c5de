// Headless Debian Chromium through playwright-core (never a downloaded
// browser), with fake camera and microphone.
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

// `args`: more command-line flags; `executablePath`: another program that
// runs Chromium (a wrapper that starts it in a network namespace).
export async function launch({ args = [], executablePath } = {}) {
  return chromium.launch({
    executablePath: executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--no-sandbox',
      ...args,
    ],
  });
}

// From the gateway's /login through the provider's form and back.
export async function loginViaIdp(page, gatewayUrl, login) {
  await page.goto(`${gatewayUrl}/login`);
  await page.waitForSelector('#login');
  await page.fill('#login', login);
  await page.fill('#password', 'any-password');
  const origin = new URL(gatewayUrl).origin;
  await Promise.all([
    page.waitForURL(url => url.origin === origin, { timeout: 20000 }),
    page.click('#submit'),
  ]);
}

// From the gateway's /login through the built-in development provider's
// picker (`gateway --dev`) and back.
export async function loginViaDevIdp(page, gatewayUrl, person) {
  await page.goto(`${gatewayUrl}/login`);
  await page.waitForSelector(`button[data-person="${person}"]`);
  await Promise.all([
    page.waitForURL(url => !url.pathname.startsWith('/dev-idp/'), { timeout: 20000 }),
    page.click(`button[data-person="${person}"]`),
  ]);
}

// Creates a lesson of 7A starting now (an hour long) as the teacher signed
// in on `page`; returns its id.
export async function createLesson(page, title = 'Fractions') {
  return page.evaluate(async title => {
    const now = Date.now();
    const r = await fetch('/api/lessons', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title, class: '7A', starts_at_ms: now, ends_at_ms: now + 3600000 }) });
    if (!r.ok) throw new Error(`creating a lesson: ${r.status}`);
    return (await r.json()).id;
  }, title);
}

// axe-core (npm, vendored in node_modules), injected through the DevTools
// protocol so that the pages' Content-Security-Policy stays as it is.
const axeSource = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');

// Runs axe-core on `page` as it is now and returns its serious and critical
// violations, each as "rule: target, target (help)".
export async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 5).map(n => n.target.join(' ')).join(', ')} — ${v.help}`);
}

// The two sizes every page is checked and photographed at.
export const SIZES = [['', { width: 1280, height: 800 }], ['-phone', { width: 390, height: 844 }]];

// Screenshots of `page` at both sizes into `dir` (if set) as `name.png` and
// `name-phone.png`, then back to the first size. `full`: the whole page
// rather than what fits on the screen (the lesson page must fit).
export async function screenshots(page, dir, name, { full = true } = {}) {
  if (!dir) return;
  for (const [suffix, size] of SIZES) {
    await page.setViewportSize(size);
    await new Promise(r => setTimeout(r, 400));
    await page.screenshot({ path: `${dir}/${name}${suffix}.png`, fullPage: full });
  }
  await page.setViewportSize(SIZES[0][1]);
}

// What issue 19 found broken on every page and axe-core alone would not
// catch: a skip link to the main content, first in the page; exactly one
// live region, the polite `#announcer` (a second one, or the whole page
// as one, is re-read on every change); no developer wording (a wire name
// such as `pupil_copy` or `not_permitted` in what the page says, outside
// a `<code>` reference shown on purpose). Returns the problems found.
export async function pageStructure(page) {
  return page.evaluate(() => {
    const problems = [];
    const skip = document.querySelector('body a[href^="#"]');
    const target = skip && document.getElementById(skip.getAttribute('href').slice(1));
    if (!skip || !target || !/skip/i.test(skip.textContent)) problems.push('no skip link to the main content');
    else if ([...document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')].find(e => e.tabIndex >= 0) !== skip) problems.push('the skip link is not the first thing focused');
    const live = [...document.querySelectorAll('[aria-live], [role=status], [role=alert], [role=log], [role=marquee], [role=timer], output')]
      .filter(e => e.getAttribute('aria-live') !== 'off');
    const ids = live.map(e => e.id || e.tagName.toLowerCase());
    if (ids.length !== 1 || ids[0] !== 'announcer' || live[0].getAttribute('aria-live') !== 'polite') problems.push(`live regions: ${ids.join(', ') || 'none'}`);
    const said = document.body.cloneNode(true);
    said.querySelectorAll('code, script, style, template').forEach(e => e.remove());
    const texts = [];
    for (const walk = document.createTreeWalker(said, NodeFilter.SHOW_TEXT); walk.nextNode();) texts.push(walk.currentNode.nodeValue);
    const wire = texts.join(' ').match(/\b[a-z]+(?:_[a-z]+)+\b/g);
    if (wire) problems.push(`developer wording: ${[...new Set(wire)].join(', ')}`);
    return problems;
  });
}

// Records every response of `page` from the gateway's API with a status of
// 400 or more (`method path status`), to show a page calls nothing it may
// not (issue 19: pupils' pages asked for `/api/people` and got 403s).
export function apiFailures(page) {
  const failed = [];
  page.on('response', r => {
    const url = new URL(r.url());
    if (url.pathname.startsWith('/api/') && r.status() >= 400) failed.push(`${r.request().method()} ${url.pathname} ${r.status()}`);
  });
  return failed;
}
