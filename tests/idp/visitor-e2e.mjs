// An inspector's visit prepared by e-mail, in headless Chromium through the
// real test provider: a teacher makes a lesson; SLT grants the inspector's
// e-mail address on the page's visitors form; an account giving that
// address unverified gets nothing; the inspector, whose provider verified
// it, sees the lesson and may join it; the claim is in the audit log.
//
//   GATEWAY_URL=http://127.0.0.1:8080 node visitor-e2e.mjs
//
// Prints one JSON line per step; exits non-zero with the reason on the
// first failed expectation.
import { axeViolations, launch, loginViaIdp } from './browser.mjs';

const gateway = process.env.GATEWAY_URL;
function step(name, data = {}) { console.log(JSON.stringify({ step: name, ...data })); }
function expect(cond, message) { if (!cond) throw new Error(`expectation failed: ${message}`); }

async function api(page, path, body) {
  return page.evaluate(async ([path, body]) => {
    const init = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    const r = await fetch(path, init);
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    return { status: r.status, json, text };
  }, [path, body]);
}

const browser = await launch();
try {
  const open = async login => {
    const page = await (await browser.newContext()).newPage();
    await loginViaIdp(page, gateway, login);
    await page.waitForSelector('body[data-page]');
    return page;
  };

  const teacher = await open('teacher');
  const now = Date.now();
  const made = await api(teacher, '/api/lessons', { title: 'Inspection demo', class: '7A', starts_at_ms: now, ends_at_ms: now + 3600000 });
  expect(made.status === 201, `lesson: ${made.status} ${made.text}`);
  const lesson = made.json.id;
  step('lesson', { lesson });

  // SLT on the page's own form: no subject, only the address they were given.
  const slt = await open('slt');
  await slt.waitForSelector('#grant-form');
  await slt.waitForSelector(`#grant-lesson option[value="${lesson}"]`, { state: 'attached' });
  const bad = await axeViolations(slt);
  expect(bad.length === 0, `the leader's page with the visitors form: ${bad.join('; ')}`);
  await slt.fill('#grant-email', 'not an address');
  await slt.fill('#grant-reason', 'Ofsted inspection');
  await slt.selectOption('#grant-lesson', lesson);
  await slt.evaluate(() => { document.getElementById('grant-email').type = 'text'; });
  await slt.click('#grant-form button[type=submit]');
  await slt.waitForFunction(() => document.getElementById('grant-status').textContent.includes('not an e-mail address'), null, { timeout: 10000 });
  await slt.fill('#grant-email', ' Hale@Inspectorate.example ');
  await slt.click('#grant-form button[type=submit]');
  await slt.waitForFunction(() => document.getElementById('grant-status').textContent.startsWith('Access granted to Hale@Inspectorate.example'), null, { timeout: 10000 });
  step('granted', { status: await slt.textContent('#grant-status') });

  // The same address, unverified by the provider: nothing.
  const impostor = await open('visitor-unverified');
  expect((await impostor.evaluate(() => document.body.dataset.page)) === 'visitor', 'the unverified account lands on the visitor page');
  const seen = await api(impostor, '/api/lessons');
  expect(seen.status === 200 && seen.json.length === 0, `an unverified address saw lessons: ${seen.text}`);
  expect((await api(impostor, `/api/lessons/${lesson}/token`, {})).status === 404, 'an unverified address got a room token');
  step('unverified_refused');

  // The inspector, verified: the lesson is theirs to observe.
  const inspector = await open('visitor');
  await inspector.waitForSelector(`#lessons li[data-lesson="${lesson}"]`);
  const token = await api(inspector, `/api/lessons/${lesson}/token`, {});
  expect(token.status === 200 && token.json.token, `the inspector's room token: ${token.status} ${token.text}`);
  // Claimed once: the unverified account signing in again still gets nothing.
  const again = await open('visitor-unverified');
  expect((await api(again, '/api/lessons')).json.length === 0, 'the claimed grant reached another account');
  step('verified_claimed');

  const claims = (await api(slt, '/api/audit?action=visitor_grant_claimed')).json;
  expect(claims.length === 1 && claims[0].actor.subject === 'sub-visitor' && claims[0].target.subject === 'hale@inspectorate.example' && claims[0].lesson === lesson,
    `the claim in the audit log: ${JSON.stringify(claims)}`);
  const grants = (await api(slt, '/api/audit?action=visitor_grant')).json;
  expect(grants.some(g => g.target?.subject === 'hale@inspectorate.example' && g.outcome === 'ok'), `the grant in the audit log: ${JSON.stringify(grants)}`);
  step('audited', { claims: claims.length });
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
