// The classroom in headless Chromium against `gateway --dev`, as its
// people use it: class and date checks on the lesson form (and the message
// that says the lesson was made stays); the device check; a teacher who
// keeps keyboard focus in the people panel while pupils join and leave;
// hands raised, hidden from other pupils until the teacher shows them, and
// lowered; a pupil who reloads leaves no stale tile; the teacher's camera
// off shows a placeholder, not a frozen frame; a concern in the page's own
// dialog; leaving; the register (checked against who actually joined, and
// who may read it); the end, after which the lesson is marked ended
// everywhere and its page never tries to rejoin. axe-core checks every page
// on the way (no serious or critical violation), at 1280×800 and 390×844,
// and so does `pageStructure` (a skip link, one polite live region); what
// a pupil needs is above the fold at both sizes; a microphone the teacher
// turns off shows as off at the pupil; pupils' pages make no API call that
// is refused.
//
//   GATEWAY_URL=http://127.0.0.1:8080 [SCREENSHOT_DIR=dir] node classroom-e2e.mjs
//
// Prints one JSON line per step; exits non-zero with the reason on the
// first failed expectation.
import { apiFailures, axeViolations, launch, loginViaDevIdp, pageStructure, screenshots, SIZES } from './browser.mjs';

const gateway = process.env.GATEWAY_URL;
const shots = process.env.SCREENSHOT_DIR;
const sleep = ms => new Promise(r => setTimeout(r, ms));
function step(name, data = {}) { console.log(JSON.stringify({ step: name, ...data })); }
function expect(cond, message) { if (!cond) throw new Error(`expectation failed: ${message}`); }

async function waitFor(page, fn, arg, what, timeout = 20000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => ({ state: document.body.dataset.lessonState, notice: document.getElementById('notice')?.textContent, error: document.body.dataset.lastError })).catch(() => ({}));
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(state)}`);
  }
}

// axe-core at both sizes: no serious or critical violation.
const checked = [];
async function accessible(page, name) {
  for (const [suffix, size] of SIZES) {
    await page.setViewportSize(size);
    await sleep(200);
    const bad = await axeViolations(page);
    expect(bad.length === 0, `${name}${suffix}: ${bad.join('; ')}`);
  }
  const problems = await pageStructure(page);
  expect(problems.length === 0, `${name}: ${problems.join('; ')}`);
  await page.setViewportSize(SIZES[0][1]);
  checked.push(name);
}

async function api(page, path, body) {
  return page.evaluate(async ([path, body]) => {
    const init = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    const r = await fetch(path, init);
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* CSV */ }
    return { status: r.status, json, text };
  }, [path, body]);
}

const browser = await launch();
try {
  // Nothing slips past axe unnoticed: a page with a known fault is caught.
  const probe = await browser.newPage();
  await probe.setContent('<html lang="en"><title>t</title><main><input type="text"></main></html>');
  expect((await axeViolations(probe)).some(v => v.startsWith('label')), 'axe-core did not report an unlabelled input');
  await probe.close();

  const open = async person => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: SIZES[0][1] });
    const page = await context.newPage();
    page.failures = apiFailures(page);
    await loginViaDevIdp(page, gateway, person);
    return page;
  };
  const enter = async (page, lesson) => {
    await page.goto(`${gateway}/lessons/${lesson}`);
    await page.click('#join');
  };

  // --- the lesson form: the school's classes, no date in the past --------
  const teacher = await open('teacher');
  await teacher.waitForSelector('#create-lesson');
  const classes = await teacher.evaluate(() => [...document.querySelectorAll('#new-class option')].map(o => o.value).filter(Boolean));
  expect(classes.includes('7A') && classes.includes('7B') && !classes.includes('7a'), `classes offered: ${classes}`);
  const now = Date.now();
  const bad = [
    [{ title: 'X', class: '7a', starts_at_ms: now, ends_at_ms: now + 3600000 }, 'Did you mean 7A?'],
    [{ title: 'X', class: '7Z', starts_at_ms: now, ends_at_ms: now + 3600000 }, 'no class called'],
    [{ title: 'X', class: '7A', starts_at_ms: Date.UTC(2020, 0, 6, 9), ends_at_ms: Date.UTC(2020, 0, 6, 10) }, 'in the past'],
  ];
  for (const [body, words] of bad) {
    const r = await api(teacher, '/api/lessons', body);
    expect(r.status === 400 && r.json.error === 'invalid' && r.json.message.includes(words), `refusal of ${JSON.stringify(body)}: ${r.status} ${r.text}`);
  }
  // The form itself refuses a start in the past, with the server's words.
  await teacher.fill('#new-title', 'Fractions');
  await teacher.selectOption('#new-class', '7A');
  await teacher.evaluate(() => { const s = document.getElementById('new-starts'); s.removeAttribute('min'); s.value = '2020-01-06T09:00'; });
  await teacher.click('#create-lesson button[type=submit]');
  await waitFor(teacher, () => document.getElementById('create-status').textContent.includes('in the past'), null, 'the past start refused on the form');
  const pad = n => String(n).padStart(2, '0');
  const d = new Date(Date.now() + 60000);
  await teacher.fill('#new-starts', `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`);
  await teacher.click('#create-lesson button[type=submit]');
  await waitFor(teacher, () => document.getElementById('create-status').textContent.includes('created'), null, 'lesson created');
  await waitFor(teacher, () => document.querySelector('#lessons li[data-state="live"] .title')?.textContent === 'Fractions', null, 'the new lesson listed as live');
  await sleep(500);
  expect((await teacher.textContent('#create-status')).includes('created'), 'the "created" message was wiped by the refresh');
  const lesson = await teacher.evaluate(() => document.querySelector('#lessons li[data-state="live"]').dataset.lesson);
  await accessible(teacher, 'teacher-home');
  await screenshots(teacher, shots, 'teacher-home');
  step('lesson_form', { lesson, classes });

  // --- the device check, then the lesson ----------------------------------
  await teacher.goto(`${gateway}/lessons/${lesson}`);
  await teacher.waitForSelector('#join');
  await waitFor(teacher, () => document.getElementById('prejoin-preview').srcObject && document.getElementById('camera-select').options.length > 0, null, 'the preview and the device lists');
  await waitFor(teacher, () => document.getElementById('mic-level').value > 0, null, 'the microphone level meter moving');
  await accessible(teacher, 'prejoin');
  await screenshots(teacher, shots, 'prejoin', { full: false });
  await teacher.click('#join');
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher in');
  const teacherId = await teacher.evaluate(() => window.chaperone.you);
  expect((await teacher.textContent('#lesson-title')) === 'Fractions' && (await teacher.textContent('#lesson-class')).includes('7A'), 'title and class on the lesson page');
  step('teacher_in', { teacherId });

  const pupilA = await open('pupil-a');
  const pupilB = await open('pupil-b');
  const pupilC = await open('pupil-c');
  for (const p of [pupilA, pupilB]) {
    await enter(p, lesson);
    await waitFor(p, () => document.body.dataset.lessonState === 'waiting', null, 'pupil waiting');
  }
  await accessible(pupilA, 'pupil-waiting');
  const idA = await pupilA.evaluate(() => window.chaperone.you);
  const idB = await pupilB.evaluate(() => window.chaperone.you);
  await waitFor(teacher, n => document.querySelectorAll('[data-waiting]').length === n, 2, 'two waiting');
  expect((await teacher.getAttribute(`[data-admit="${idA}"]`, 'aria-label')) === 'Admit Ali (7A)', 'the admit button names the pupil');
  await teacher.click('#admit-all');
  for (const p of [pupilA, pupilB]) await waitFor(p, () => document.body.dataset.lessonState === 'admitted', null, 'pupil admitted');
  step('admitted', { idA, idB });

  // --- keyboard focus survives pupils coming and going --------------------
  const micOffA = `[data-action="mic-off"][data-participant="${idA}"]`;
  expect((await teacher.getAttribute(micOffA, 'aria-label')) === 'Mic off: Ali (7A)', 'per-pupil buttons name the pupil');
  await teacher.focus(micOffA);
  await teacher.keyboard.press('Tab');
  const focusedBefore = await teacher.evaluate(() => { window.focusMark = document.activeElement; return document.activeElement.outerHTML.slice(0, 80); });
  await enter(pupilC, lesson); // joins the waiting room: the people panel changes
  await waitFor(teacher, () => document.querySelectorAll('[data-waiting]').length === 1, null, 'pupil C waiting at the teacher');
  await pupilB.click('#leave'); // and pupil B leaves
  await waitFor(teacher, id => !document.querySelector(`[data-participant="${id}"]`), idB, 'pupil B gone from the teacher\'s list');
  expect(await teacher.evaluate(() => document.activeElement === window.focusMark && document.activeElement.isConnected), `focus moved while the roster changed (was ${focusedBefore})`);
  await teacher.keyboard.press('Tab');
  expect(await teacher.evaluate(() => document.getElementById('side').contains(document.activeElement)), 'Tab left the people panel');
  expect((await pupilB.evaluate(() => document.body.dataset.lessonState)) === 'left', 'pupil B\'s page says they left');
  await screenshots(pupilB, shots, 'pupil-left', { full: false });
  step('focus_kept', { focused: focusedBefore });

  // --- hands ---------------------------------------------------------------
  await teacher.click(`[data-admit]`);
  await waitFor(pupilC, () => document.body.dataset.lessonState === 'admitted', null, 'pupil C admitted');
  const idC = await pupilC.evaluate(() => window.chaperone.you);
  await pupilA.click('#raise-hand');
  await pupilC.click('#raise-hand');
  await waitFor(teacher, ids => JSON.stringify([...document.querySelectorAll('#hand-queue li')].map(li => Number(li.dataset.hand))) === JSON.stringify(ids), [idA, idC], 'hands in order at the teacher');
  await waitFor(pupilA, () => document.getElementById('raise-hand').getAttribute('aria-pressed') === 'true', null, 'A sees their own hand up');
  await sleep(500);
  expect(!(await pupilC.evaluate(id => window.chaperone.hands.includes(id), idA)), 'pupil C saw A\'s hand while hands are hidden');
  await teacher.click('#tab-settings');
  await teacher.check('#show-hands');
  await waitFor(pupilC, id => window.chaperone.hands.includes(id), idA, 'pupil C sees A\'s hand once shown');
  await teacher.click('#tab-people');
  await teacher.click(`[data-lower-hand="${idA}"]`);
  await waitFor(pupilA, () => document.getElementById('raise-hand').textContent === 'Raise hand', null, 'A\'s hand lowered by the teacher');
  await waitFor(teacher, id => !document.querySelector(`[data-hand="${id}"]`), idA, 'A gone from the queue');
  await screenshots(teacher, shots, 'teacher-lesson-hands', { full: false });
  step('hands', { queue: [idA, idC] });

  // --- a reload leaves no stale tile; camera off shows a placeholder -------
  await pupilA.click('#camera-toggle');
  await waitFor(teacher, id => !!document.querySelector(`[data-tile="${id}"] video`), idA, 'A\'s camera tile at the teacher');
  await pupilA.reload();
  await pupilA.click('#join');
  await waitFor(pupilA, old => document.body.dataset.lessonState === 'admitted' && window.chaperone.you !== old, idA, 'A back after reloading');
  const idA2 = await pupilA.evaluate(() => window.chaperone.you);
  await waitFor(teacher, ([old, now]) => !document.querySelector(`[data-tile="${old}"]`) && !!document.querySelector(`[data-tile="${now}"]`), [idA, idA2], 'the old tile gone and the new one there');
  const captions = await teacher.evaluate(() => [...document.querySelectorAll('figcaption')].map(c => c.textContent));
  expect(!captions.some(c => /^#\d/.test(c)), `a tile captioned by number: ${captions}`);
  await waitFor(pupilA, id => !!document.querySelector(`[data-tile="${id}"] video`), teacherId, 'the teacher\'s video at A');
  await teacher.click('#camera-toggle');
  await waitFor(pupilA, id => !!document.querySelector(`[data-tile="${id}"] .placeholder`) && !document.querySelector(`[data-tile="${id}"] video`), teacherId, 'a camera-off placeholder for the teacher at A');
  expect((await pupilA.textContent(`[data-tile="${teacherId}"] figcaption`)).includes('Ms Rivera'), 'the placeholder names the teacher');
  await screenshots(pupilA, shots, 'pupil-teacher-camera-off', { full: false });
  await teacher.click('#camera-toggle');
  await waitFor(pupilA, id => !!document.querySelector(`[data-tile="${id}"] video`), teacherId, 'the teacher\'s video back at A');
  step('tiles', { old: idA, now: idA2 });

  // --- the pupil's page, its chat and its concern dialog ------------------
  await pupilA.fill('#chat-input', 'half a sentence');
  await teacher.click(`[data-admit]`).catch(() => {}); // nobody waiting: a render at A all the same
  await pupilA.evaluate(() => window.chaperone.render());
  expect((await pupilA.inputValue('#chat-input')) === 'half a sentence', 'a render lost the chat draft');
  await accessible(pupilA, 'pupil-lesson');
  // What a pupil needs is on the screen without scrolling, at both sizes:
  // the toolbar, their teacher and themselves.
  for (const [suffix, size] of SIZES) {
    await pupilA.setViewportSize(size);
    await sleep(300);
    const off = await pupilA.evaluate(id => {
      window.scrollTo(0, 0);
      const needed = ['#toolbar', '#mic-toggle', '#camera-toggle', '#raise-hand', '#leave', `[data-tile="${id}"]`, '[data-tile="self"]'];
      return needed.filter(sel => {
        const e = document.querySelector(sel);
        if (!e) return true;
        const r = e.getBoundingClientRect();
        return r.width === 0 || r.top < 0 || r.left < 0 || r.bottom > window.innerHeight + 1 || r.right > window.innerWidth + 1;
      });
    }, teacherId);
    expect(off.length === 0, `below the fold or off screen for a pupil${suffix}: ${off.join(', ')}`);
  }
  await pupilA.setViewportSize(SIZES[0][1]);
  await screenshots(pupilA, shots, 'pupil-lesson', { full: false });
  // A microphone the teacher turns off shows as off at the pupil.
  await pupilA.click('#mic-toggle');
  await waitFor(pupilA, () => document.getElementById('mic-toggle').getAttribute('aria-pressed') === 'true', null, 'A\'s microphone on');
  await teacher.click(`[data-action="mic-off"][data-participant="${idA2}"]`);
  await waitFor(pupilA, () => document.getElementById('mic-toggle').getAttribute('aria-pressed') === 'false' && document.getElementById('mic-toggle').textContent === 'Microphone off', null, 'A\'s microphone shown off after the teacher turned it off');
  await pupilA.click('#report-concern');
  await pupilA.waitForSelector('dialog[open] textarea');
  await accessible(pupilA, 'concern-dialog');
  await screenshots(pupilA, shots, 'pupil-concern', { full: false });
  await pupilA.fill('dialog[open] textarea', 'someone said something unkind');
  await pupilA.click('#dialog-confirm');
  await waitFor(pupilA, () => document.getElementById('notice').textContent.includes('safeguarding lead'), null, 'concern acknowledged');
  await accessible(teacher, 'teacher-lesson');
  await teacher.click('#tab-chat');
  await accessible(teacher, 'teacher-chat');
  await teacher.click('#tab-settings');
  await teacher.click('#register-show');
  await teacher.waitForSelector('#register-table');
  await accessible(teacher, 'teacher-settings');
  await screenshots(teacher, shots, 'teacher-register', { full: false });
  await teacher.click('#tab-people');
  for (const [who, p] of [['A', pupilA], ['B', pupilB], ['C', pupilC]]) expect(p.failures.length === 0, `pupil ${who}'s pages made refused API calls: ${p.failures}`);
  step('pupil_page');

  // --- the register ---------------------------------------------------------
  const csv = (await api(teacher, `/api/lessons/${lesson}/register.csv`)).text;
  const rows = csv.trim().split('\r\n').slice(1).map(line => line.split(','));
  const statusOf = name => rows.find(r => r[2] === name)?.[5];
  expect(statusOf('Ali (7A)') === 'present' && statusOf('Cal (7A)') === 'present', `present pupils: ${csv}`);
  expect(statusOf('Bea (7A)') === 'attended', `pupil B left: ${csv}`);
  expect(statusOf('Ms Rivera') === 'present', `teacher: ${csv}`);
  expect(!rows.some(r => r[2] === 'Dee (7B)'), 'a pupil of another class in the register');
  expect(rows.filter(r => r[2] === 'Ali (7A)').length === 1, 'a reconnect made a second register line');
  expect((await api(pupilA, `/api/lessons/${lesson}/register.csv`)).status === 403, 'a pupil read the register');
  const slt = await open('slt');
  expect((await api(slt, `/api/lessons/${lesson}/register`)).status === 200, 'SLT could not read the register');
  step('register_live', { rows: rows.length });

  // --- the end ----------------------------------------------------------------
  await teacher.click('#end-lesson');
  await teacher.waitForSelector('dialog[open]');
  await teacher.click('#dialog-confirm');
  for (const p of [pupilA, pupilC, teacher]) await waitFor(p, () => document.body.dataset.lessonState === 'ended', null, 'ended');
  expect(await pupilA.evaluate(() => document.getElementById('recording').hidden || document.getElementById('recording').dataset.recording === 'false'), 'the recording indicator stayed on after the end');
  expect(await pupilA.isVisible('#recording-link'), 'no link to the recording for a pupil of the class');
  await accessible(pupilA, 'pupil-ended');
  await screenshots(pupilA, shots, 'pupil-ended', { full: false });
  // Coming back to an ended lesson: it says so, and never tries to rejoin.
  const sockets = [];
  pupilB.on('websocket', ws => sockets.push(ws.url()));
  await pupilB.goto(`${gateway}/lessons/${lesson}`);
  await waitFor(pupilB, () => document.body.dataset.lessonState === 'ended', null, 'an ended lesson opened again');
  await sleep(3000);
  expect(sockets.length === 0 && (await pupilB.evaluate(() => document.body.dataset.lessonState)) === 'ended', `the page tried to rejoin an ended lesson: ${sockets}`);
  expect(!(await pupilB.isVisible('#recording[data-recording="true"]')), 'the ended page shows "Recording"');
  // A lesson for tomorrow: upcoming in the list, and its page waits without connecting.
  const tomorrow = Date.now() + 86400000;
  const upcoming = (await api(teacher, '/api/lessons', { title: 'Poetry', class: '7A', starts_at_ms: tomorrow, ends_at_ms: tomorrow + 3600000 })).json.id;
  await pupilB.goto(`${gateway}/lessons/${upcoming}`);
  await waitFor(pupilB, () => document.body.dataset.lessonState === 'upcoming', null, 'an upcoming lesson opened');
  expect(sockets.length === 0, `the page connected to an upcoming lesson: ${sockets}`);
  await accessible(pupilB, 'pupil-upcoming');
  await screenshots(pupilB, shots, 'pupil-upcoming', { full: false });
  await pupilB.goto(gateway);
  await waitFor(pupilB, id => document.querySelector(`#lessons li[data-lesson="${id}"]`)?.dataset.state === 'ended', lesson, 'the lesson marked ended in the pupil\'s list');
  expect((await pupilB.getAttribute(`#lessons li[data-lesson="${upcoming}"]`, 'data-state')) === 'upcoming', 'tomorrow\'s lesson marked upcoming');
  expect((await pupilB.textContent(`#lessons li[data-lesson="${lesson}"] .state`)) === 'Ended', 'the ended mark');
  await accessible(pupilB, 'pupil-home');
  await screenshots(pupilB, shots, 'pupil-home');
  expect(pupilB.failures.length === 0, `pupil B's pages (an ended lesson, an upcoming one, home) made refused API calls: ${pupilB.failures}`);
  // The register after the lesson: kept, with everyone's time.
  const after = (await api(teacher, `/api/lessons/${lesson}/register`)).json;
  const byName = Object.fromEntries(after.map(r => [r.name, r]));
  expect(byName['Ali (7A)'].status === 'attended' && byName['Ali (7A)'].stayed_secs >= 5, `A's time after the end: ${JSON.stringify(byName['Ali (7A)'])}`);
  expect(byName['Bea (7A)'].left_ms < byName['Ali (7A)'].left_ms, 'B left before the end');
  expect(after.every(r => r.status !== 'present'), 'someone still present after the end');
  await slt.goto(gateway);
  await slt.waitForSelector(`#lessons li[data-lesson="${lesson}"] [data-register-of]`);
  await accessible(slt, 'leader-home');
  await screenshots(slt, shots, 'leader-home');
  step('ended', { checked });
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
