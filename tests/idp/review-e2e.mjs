// Safeguarding review in headless Chromium against `gateway --dev`: a short
// lesson is held and recorded (teacher, two pupils on camera, public and
// private chat, a pupil's concern, a teacher's incident), then replayed in
// the same run:
// - SLT must state a reason before anything plays; the video plays (time
//   advances, frame size non-zero); seeking to an event works; the private
//   chat is there;
// - a pupil's review copy has the teacher only and public chat only, and
//   another pupil's file is refused;
// - the DSL marks a range DSL-only: SLT no longer gets its chat and events,
//   the DSL (with its own reason) does; the DSL's incident list links to the
//   replay at that moment;
// - a teacher, a pupil of another class and an unauthenticated request are
//   refused;
// - the replay list, the player (SLT and a pupil) and the DSL's incidents
//   pass axe-core (no serious or critical violation) at 1280×800 and
//   390×844, each with a skip link and one polite live region, and the
//   timeline reads as sentences with names, never an
//   issuer URL or a participant number.
//
//   GATEWAY_URL=http://127.0.0.1:8080 [SCREENSHOT_DIR=dir] node review-e2e.mjs
//
// Prints one JSON line per step; exits non-zero on the first failed expectation.
import { axeViolations, launch, loginViaDevIdp, pageStructure, screenshots, SIZES } from './browser.mjs';

const gateway = process.env.GATEWAY_URL;
const shots = process.env.SCREENSHOT_DIR;
const sleep = ms => new Promise(r => setTimeout(r, ms));
function step(name, data = {}) { console.log(JSON.stringify({ step: name, ...data })); }
function expect(cond, message) { if (!cond) throw new Error(`expectation failed: ${message}`); }
async function waitFor(page, fn, arg, what, timeout = 30000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch (e) {
    const s = await page.evaluate(() => ({ state: document.body.dataset.replayState || document.body.dataset.lessonState, error: document.body.dataset.lastError, text: document.body.innerText.slice(0, 400) })).catch(() => ({}));
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
  }
}
async function shot(page, name) {
  await screenshots(page, shots, name);
}
// axe-core at both sizes: no serious or critical violation.
async function accessible(page, name) {
  for (const [suffix, size] of SIZES) {
    await page.setViewportSize(size);
    await sleep(200);
    const bad = await axeViolations(page);
    expect(bad.length === 0, `${name}${suffix}: ${bad.join('; ')}`);
  }
  // A skip link and one polite live region (issue 19).
  const problems = await pageStructure(page);
  expect(problems.length === 0, `${name}: ${problems.join('; ')}`);
  await page.setViewportSize(SIZES[0][1]);
}
// A same-origin JSON call from inside a page: [status, body].
function call(page, path, body) {
  return page.evaluate(async ([path, body]) => {
    const init = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    const r = await fetch(path, { credentials: 'same-origin', ...init });
    return [r.status, await r.json().catch(() => null)];
  }, [path, body]);
}

const browser = await launch();
try {
  const open = async person => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: SIZES[0][1] });
    const page = await context.newPage();
    // Headless has no screen to capture: a worksheet drawn on a canvas stands in for one.
    await page.addInitScript(() => {
      navigator.mediaDevices.getDisplayMedia = async () => {
        const c = document.createElement('canvas'); c.width = 1280; c.height = 720;
        const g = c.getContext('2d');
        const draw = () => {
          g.fillStyle = '#fdfdf8'; g.fillRect(0, 0, 1280, 720);
          g.fillStyle = '#222'; g.font = '48px sans-serif'; g.fillText('Worksheet 3: fractions', 80, 110);
          g.font = '40px sans-serif';
          ['1.  3/4 + 1/8 = ?', '2.  2/3 of 27 = ?', '3.  Which is larger: 5/8 or 3/5?'].forEach((t, i) => g.fillText(t, 100, 240 + i * 120));
        };
        draw(); setInterval(draw, 100);
        return c.captureStream(10);
      };
    });
    await loginViaDevIdp(page, gateway, person);
    return page;
  };

  // ---- a short lesson, recorded
  const teacher = await open('teacher');
  const lesson = await teacher.evaluate(async () => {
    const now = Date.now();
    const r = await fetch('/api/lessons', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title: 'Review demo', class: '7A', starts_at_ms: now, ends_at_ms: now + 3600000 }) });
    return (await r.json()).id;
  });
  // The lesson page: the device check, then in.
  const enter = async (page) => { await page.goto(`${gateway}/lessons/${lesson}`); await page.click('#join'); };
  // The page's own dialogs for a concern, an incident and the end.
  const answer = async (page, words) => {
    await page.waitForSelector('dialog[open]');
    if (words) await page.fill('dialog[open] textarea', words);
    await page.click('#dialog-confirm');
  };
  await enter(teacher);
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher admitted');
  const teacherId = await teacher.evaluate(() => window.chaperone.you);
  const pupilA = await open('pupil-a');
  const pupilB = await open('pupil-b');
  for (const p of [pupilA, pupilB]) {
    await enter(p);
    await waitFor(p, () => document.body.dataset.lessonState === 'waiting', null, 'pupil waiting');
  }
  const idA = await pupilA.evaluate(() => window.chaperone.you);
  const idB = await pupilB.evaluate(() => window.chaperone.you);
  await waitFor(teacher, () => document.querySelectorAll('[data-waiting]').length === 2, null, 'two waiting');
  await teacher.click('#admit-all');
  for (const p of [pupilA, pupilB]) await waitFor(p, () => document.body.dataset.lessonState === 'admitted', null, 'pupil admitted');
  for (const p of [pupilA, pupilB]) {
    await p.click('#mic-toggle');
    await p.click('#camera-toggle');
  }
  await sleep(5000);
  // The teacher shares a worksheet and marks it up; pupil A, allowed to
  // draw, adds a label; the teacher clears the marks a few seconds later.
  await teacher.click('#share-screen');
  await waitFor(teacher, id => window.chaperone.roster.find(p => p.id === id)?.forwarded.includes('screen_share'), teacherId, "the teacher's screen shared");
  await sleep(2000);
  await teacher.evaluate(id => window.chaperone.send({ draw: { layer: id, stroke: { tool: 'pen', colour: '#e01b24', width: 80, points: [[2000, 5000], [8000, 5000]] } } }), teacherId);
  await teacher.check(`input[data-permission="annotate"][data-participant="${idA}"]`);
  await waitFor(pupilA, () => window.chaperone.me.permissions.annotate === true, null, 'pupil A may draw');
  await pupilA.evaluate(id => window.chaperone.send({ draw: { layer: id, stroke: { tool: 'text', colour: '#1c71d8', width: 200, points: [[1000, 2000]], text: 'PUPIL-A-LABEL' } } }), teacherId);
  await waitFor(teacher, () => window.chaperone.annotations.marks.size === 2, null, 'both marks at the teacher');
  await sleep(3000);
  await teacher.evaluate(() => window.chaperone.send({ clear_marks: {} }));
  await waitFor(teacher, () => window.chaperone.annotations.marks.size === 0, null, 'marks cleared');
  await sleep(2000);
  await pupilA.fill('#chat-input', 'hello from Ali');
  await pupilA.click('#chat-send');
  // The private message goes straight through the page's socket (the
  // recipient picker can be re-rendered by a roster update mid-step).
  await pupilA.evaluate(id => window.chaperone.send({ chat: { to: id, text: 'a private worry' } }), teacherId);
  await waitFor(teacher, () => [...document.querySelectorAll('#chat-log li[data-private="true"]')].some(li => li.textContent.includes('a private worry')), null, 'private message at the teacher');
  await sleep(3000);
  await pupilA.click('#raise-hand');
  await pupilB.click('#report-concern');
  await answer(pupilB, 'test note');
  await sleep(3000);
  await teacher.click('#flag-incident');
  await answer(teacher, 'test note');
  await sleep(5000);
  await teacher.click('#end-lesson');
  await answer(teacher);
  for (const p of [pupilA, pupilB]) await waitFor(p, () => document.body.dataset.lessonState === 'ended', null, 'lesson ended');
  step('recorded', { lesson, teacherId, idA, idB });
  for (const p of [pupilA, pupilB, teacher]) await p.context().close().catch(() => {});

  // ---- refusals: unauthenticated, teacher, pupil of another class
  const anon = await (await browser.newContext()).newPage();
  await anon.goto(`${gateway}/`);
  const [anonReview] = await call(anon, `/review/api/recordings/${lesson}`);
  const [anonToken] = await call(anon, '/api/review/token', { scope: 'safeguarding', lesson, reason: 'x' });
  expect(anonReview === 401 && anonToken === 401, `unauthenticated: review ${anonReview}, token ${anonToken}`);
  const teacher2 = await open('teacher');
  const [teacherToken, teacherBody] = await call(teacher2, '/api/review/token', { scope: 'safeguarding', lesson, reason: 'curious' });
  const [teacherPupilCopy] = await call(teacher2, '/api/review/token', { scope: 'pupil_copy', lesson });
  expect(teacherToken === 403 && teacherPupilCopy === 403, `teacher got ${teacherToken}/${teacherPupilCopy}: ${JSON.stringify(teacherBody)}`);
  const other = await open('pupil-7b');
  const [otherToken] = await call(other, '/api/review/token', { scope: 'pupil_copy', lesson });
  const [otherSafeguarding] = await call(other, '/api/review/token', { scope: 'safeguarding', lesson, reason: 'x' });
  expect(otherToken === 404 && otherSafeguarding === 403, `pupil of 7B got ${otherToken}/${otherSafeguarding}`);
  step('refused', { unauthenticated: anonReview, teacher: teacherToken, other_class: otherToken });


  // ---- SLT: reason first, then playback
  const slt = await open('slt');
  await slt.goto(`${gateway}/replay/${lesson}`);
  await waitFor(slt, () => document.body.dataset.replayState === 'reason', null, 'reason form');
  expect((await slt.$$('video')).length === 0, 'video elements before a reason');
  await slt.click('#reason-go');
  await sleep(500);
  expect((await slt.evaluate(() => document.body.dataset.replayState)) === 'reason' && (await slt.$$('video')).length === 0, 'playback without a reason');
  const [noSession] = await call(slt, `/review/api/recordings/${lesson}`);
  expect(noSession === 401, `review API before the reason: ${noSession}`);
  const [noReason] = await call(slt, '/api/review/token', { scope: 'safeguarding', lesson, reason: '  ' });
  expect(noReason === 400, `token without a reason: ${noReason}`);
  await accessible(slt, 'review-reason');
  await shot(slt, 'review-reason');
  // The final manifest is written a few seconds after the end: until then
  // the replay says the lesson is unfinished; open it again until it is final.
  let detail;
  for (let i = 0; i < 20; i++) {
    await slt.fill('#reason', 'Concern raised by a pupil in 7A');
    await slt.click('#reason-go');
    await waitFor(slt, () => document.body.dataset.replayState === 'ready', null, 'replay ready');
    detail = await slt.evaluate(() => window.review.detail);
    if (detail.final) break;
    await sleep(1500);
    await slt.reload();
    await waitFor(slt, () => document.body.dataset.replayState === 'reason', null, 'reason form again');
  }
  expect(detail.final, 'the recording is final');
  const names = detail.files.map(f => f.name);
  expect(names.includes(`p${teacherId}-av.webm`), `teacher's file listed: ${names}`);
  expect(names.includes(`p${idA}-av.webm`) && names.includes(`p${idB}-av.webm`), `pupils' files listed for SLT: ${names}`);
  expect(detail.chat.some(c => c.private && c.text === 'a private worry'), `private chat for SLT: ${JSON.stringify(detail.chat)}; ${detail.events.length} events, duration ${detail.duration_ms}`);
  expect(await slt.evaluate(() => document.getElementById('chat').innerText.includes('a private worry')), 'private chat shown to SLT');
  const concern = detail.events.find(e => e.kind === 'concern');
  expect(concern && detail.events.some(e => e.kind === 'incident'), 'concern and incident in the timeline');
  // Play: time advances, frames have a size.
  await slt.click('#play');
  const teacherVideo = `video[data-file="p${teacherId}-av.webm"]`;
  await waitFor(slt, sel => { const v = document.querySelector(sel); return v && v.currentTime > 1.5 && v.videoWidth > 0 && v.videoHeight > 0; }, teacherVideo, 'teacher video playing', 40000);
  const played = await slt.evaluate(sel => { const v = document.querySelector(sel); return { t: v.currentTime, w: v.videoWidth, h: v.videoHeight }; }, teacherVideo);
  // The timeline reads as sentences: names, never an issuer or a number.
  const timeline = await slt.evaluate(() => document.getElementById('events').innerText);
  expect(timeline.includes('Ali (7A) raised their hand.') && timeline.includes('Ms Rivera let') && timeline.includes('reported a concern'), `timeline sentences: ${timeline.slice(0, 600)}`);
  expect(!/https?:\/\//.test(timeline) && !/participant|\{|"/.test(timeline), `timeline shows internals: ${timeline.slice(0, 600)}`);
  expect((await slt.textContent('h1')).startsWith('Review demo · class 7A'), 'the player names the lesson');
  await accessible(slt, 'review-slt');
  await shot(slt, 'review-slt');
  // Seek to the concern.
  await slt.click(`#events li[data-kind="concern"] button[data-seek]`);
  const target = concern.t_ms / 1000;
  await waitFor(slt, ([sel, t]) => { const v = document.querySelector(sel); return v && !v.seeking && Math.abs(v.currentTime - t) < 1.5; }, [teacherVideo, target], 'seek to the concern');
  const afterSeek = await slt.evaluate(sel => document.querySelector(sel).currentTime, teacherVideo);
  await slt.click('#load-audit');
  await waitFor(slt, () => document.querySelectorAll('#who-watched li[data-audit]').length > 0, null, 'who watched what');
  const watched = await slt.evaluate(() => [...document.querySelectorAll('#who-watched li')].map(li => li.dataset.audit));
  expect(watched.includes('view') && watched.includes('play') && watched.includes('seek'), `audit shows view, play, seek: ${watched}`);
  step('slt_replay', { played, concern_at: target, after_seek: afterSeek, files: names.length });

  // The teacher's marks over the replayed screen share: there between the
  // pen stroke and the clear, gone after it.
  await slt.evaluate(() => window.review.videos.forEach(v => v.pause()));
  const drawn = detail.marks.find(m => m.op === 'draw' && m.stroke.tool === 'pen');
  const cleared = detail.marks.find(m => m.op === 'hide' && m.ids.includes(drawn.id));
  expect(drawn && cleared && detail.marks.some(m => m.op === 'draw' && m.stroke.text === 'PUPIL-A-LABEL' && m.by.startsWith('Ali')), `marks served to SLT: ${JSON.stringify(detail.marks)}`);
  const screenFile = `p${teacherId}-screen.webm`;
  expect(names.includes(screenFile), `the teacher's screen share is replayed: ${names}`);
  // The page redraws the marks itself when a seek lands.
  const markAt = async (secs, shown) => {
    await slt.evaluate(t => window.review.seek(t), secs);
    await waitFor(slt, ([t, id, shown]) => window.review.videos.every(v => !v.seeking) && Math.abs(window.review.time() - t) < 0.3
      && ((window.review.markPixel(id, 5000, 5000) || [0, 0, 0, 0])[3] > 0) === shown, [secs, teacherId, shown], `the mark ${shown ? 'shown' : 'gone'} at ${secs} s`);
    return slt.evaluate(id => window.review.markPixel(id, 5000, 5000), teacherId);
  };
  const between = (drawn.t_ms + cleared.t_ms) / 2000;
  const before = await markAt(between, true);
  expect(before && before[3] > 0 && before[0] > 150 && before[1] < 100, `the pen stroke at ${between}s: ${before}`);
  await shot(slt, 'annotation-replay');
  const after = await markAt(cleared.t_ms / 1000 + 1, false);
  expect(after && after[3] === 0, `the stroke after the clear: ${after}`);
  step('replay_marks', { drawn_ms: drawn.t_ms, cleared_ms: cleared.t_ms, before, after });

  // ---- a pupil's review copy
  const pupil = await open('pupil-b');
  await pupil.goto(`${gateway}/replay`);
  await waitFor(pupil, () => document.body.dataset.replayState === 'ready', null, 'pupil list');
  expect((await pupil.textContent(`li[data-recording="${lesson}"] a`)) === 'Review demo', 'the pupil\'s list names the lesson');
  await accessible(pupil, 'review-pupil-list');
  await shot(pupil, 'review-pupil-list');
  await pupil.click(`li[data-recording="${lesson}"] a`);
  await waitFor(pupil, () => document.body.dataset.replayState === 'ready' && window.review.detail, null, 'pupil replay');
  const copy = await pupil.evaluate(() => window.review.detail);
  const copyNames = copy.files.map(f => f.name);
  expect(copyNames.length > 0 && copyNames.every(n => n.startsWith(`p${teacherId}-`)), `pupil copy has the teacher only: ${copyNames}`);
  expect(copy.chat.every(c => !c.private) && copy.chat.some(c => c.text === 'hello from Ali'), `pupil copy chat: ${JSON.stringify(copy.chat)}`);
  expect(!copy.events || copy.events.length === 0, 'pupil copy has no events');
  // Staff marks only: the teacher's stroke, never pupil A's label or name.
  expect(copy.marks.some(m => m.op === 'draw' && m.stroke.tool === 'pen'), `the teacher's marks in the pupil copy: ${JSON.stringify(copy.marks)}`);
  expect(copy.marks.every(m => !m.by || m.by === 'Ms Rivera') && !JSON.stringify(copy.marks).includes('PUPIL-A-LABEL') && !JSON.stringify(copy.marks).includes('Ali'), `a pupil's mark in the pupil copy: ${JSON.stringify(copy.marks)}`);
  expect(!JSON.stringify(copy).includes('a private worry') && !JSON.stringify(copy).includes('test note'), 'private text in the pupil copy');
  const [otherFile] = await call(pupil, `/review/api/recordings/${lesson}/media/p${idA}-av.webm`);
  const [ownFile] = await call(pupil, `/review/api/recordings/${lesson}/media/p${idB}-av.webm`);
  expect(otherFile === 404 && ownFile === 404, `another pupil's file: ${otherFile}, own: ${ownFile}`);
  const [pupilAudit] = await call(pupil, `/review/api/recordings/${lesson}/audit`);
  expect(pupilAudit === 403, `pupil reading the audit: ${pupilAudit}`);
  await pupil.click('#play');
  await waitFor(pupil, sel => { const v = document.querySelector(sel); return v && v.currentTime > 1 && v.videoWidth > 0; }, teacherVideo, 'pupil copy plays', 40000);
  await accessible(pupil, 'review-pupil');
  await shot(pupil, 'review-pupil');
  step('pupil_copy', { files: copyNames, chat: copy.chat.length });

  // ---- DSL: restrict a range, hold, incidents
  const dsl = await open('dsl');
  await dsl.goto(`${gateway}/replay/${lesson}`);
  await waitFor(dsl, () => document.body.dataset.replayState === 'reason', null, 'DSL reason form');
  await dsl.fill('#reason', 'Safeguarding review of the concern');
  await dsl.check('#include-restricted');
  await dsl.click('#reason-go');
  await waitFor(dsl, () => document.body.dataset.replayState === 'ready', null, 'DSL replay');
  const privateAt = detail.chat.find(c => c.private).t_ms;
  const from = Math.max(0, Math.floor(privateAt / 1000) - 1), to = Math.ceil(concern.t_ms / 1000) + 1;
  const [restricted] = await call(dsl, `/review/api/recordings/${lesson}/restrict`, { from_ms: from * 1000, to_ms: to * 1000, reason: 'imagery of a pupil' });
  expect(restricted === 201, `restrict: ${restricted}`);
  const [, dslDetail] = await call(dsl, `/review/api/recordings/${lesson}`);
  expect(dslDetail.chat.some(c => c.text === 'a private worry') && dslDetail.events.some(e => e.kind === 'concern'), 'DSL sees the restricted range');
  expect(dslDetail.restricted.length === 1 && dslDetail.restricted[0].reason === 'imagery of a pupil', 'DSL sees the restriction and its reason');
  await dsl.reload();
  await dsl.fill('#reason', 'Safeguarding review of the concern');
  await dsl.check('#include-restricted');
  await dsl.click('#reason-go');
  await waitFor(dsl, () => document.body.dataset.replayState === 'ready', null, 'DSL replay again');
  await shot(dsl, 'review-dsl');
  // SLT again: the range is blanked.
  await slt.reload();
  await slt.fill('#reason', 'Follow-up');
  await slt.click('#reason-go');
  await waitFor(slt, () => document.body.dataset.replayState === 'ready', null, 'SLT replay again');
  const blanked = await slt.evaluate(() => window.review.detail);
  const inRange = t => t >= from * 1000 && t < to * 1000;
  expect(!blanked.chat.some(c => inRange(c.t_ms)) && !blanked.events.some(e => inRange(e.t_ms)), 'SLT gets nothing inside the DSL-only range');
  expect(blanked.restricted.length === 1 && blanked.restricted[0].reason === undefined, 'SLT sees the range, not its reason');
  expect(!JSON.stringify(blanked).includes('a private worry'), 'restricted chat withheld from SLT');
  // The SLT's search: by pupil present, flagged.
  await slt.goto(`${gateway}/replay`);
  await slt.fill('#search-reason', 'Weekly safeguarding check');
  await slt.fill('input[name="pupil"]', 'Bea');
  await slt.check('input[name="flagged"]');
  await slt.click('#search-go');
  await waitFor(slt, l => !!document.querySelector(`li[data-recording="${l}"]`), lesson, 'search finds the lesson');
  await accessible(slt, 'review-search');
  await shot(slt, 'review-search');
  // The DSL's incident list links to the replay at that moment.
  await dsl.goto(`${gateway}/replay`);
  await waitFor(dsl, () => document.querySelectorAll('#incidents li[data-incident]').length >= 2, null, 'incident list');
  const link = await dsl.getAttribute('#incidents a[data-open-replay]', 'href');
  expect(link.startsWith(`/replay/${lesson}?at=`), `incident link ${link}`);
  const id = await dsl.getAttribute('#incidents li[data-incident]', 'data-incident');
  await dsl.selectOption(`select[data-status="${id}"]`, 'referred');
  await dsl.fill(`input[data-note="${id}"]`, 'Referred to the local authority');
  await dsl.click(`li[data-incident="${id}"] button`);
  await waitFor(dsl, i => document.querySelector(`li[data-incident="${i}"]`)?.innerText.includes('Referred to the local authority'), id, 'note saved');
  await accessible(dsl, 'review-incidents');
  await shot(dsl, 'review-incidents');
  // The link opens the replay at that moment (after the reason).
  await dsl.goto(`${gateway}${link}`);
  await waitFor(dsl, () => document.body.dataset.replayState === 'reason', null, 'reason form from the incident link');
  await dsl.fill('#reason', 'Following up the incident');
  await dsl.click('#reason-go');
  await waitFor(dsl, () => document.body.dataset.replayState === 'ready', null, 'replay from the incident link');
  const moment = (Number(new URL(link, gateway).searchParams.get('at')) - detail.start_ms) / 1000;
  await waitFor(dsl, ([sel, t]) => { const v = document.querySelector(sel); return v && v.readyState > 0 && Math.abs(v.currentTime - t) < 1.5; }, [teacherVideo, moment], 'replay opened at the incident');
  // The gateway's audit has the refused token requests.
  const [, audit] = await call(dsl, '/api/audit');
  const refusals = audit.filter(r => r.action === 'review_token_refused').map(r => r.outcome);
  expect(['unauthenticated', 'forbidden', 'not_found', 'reason_required'].every(c => refusals.includes(c)), `gateway audit refusals: ${refusals}`);
  step('dsl', { restricted: [from, to], incident_link: link, opened_at: moment });
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
