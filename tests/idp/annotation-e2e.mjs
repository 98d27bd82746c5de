// Annotation over a screen share in headless Chromium against
// `gateway --dev`: pupil A shares their screen; the teacher draws on it
// with the mouse and pupil B's page shows the mark (the overlay's pixels at
// the stroke's position, and not beside it), and so does pupil A on their
// own shared screen; undo and clear take it away
// at B; pupil B, allowed to draw, is revoked in the middle of a stroke and
// the rest of it reaches nobody, nor does a modified page's extension
// after the revocation; pupils are never told another pupil's name on a
// mark.
//
//   GATEWAY_URL=http://127.0.0.1:8080 [SCREENSHOT_DIR=dir] node annotation-e2e.mjs
//
// Prints one JSON line per step; exits non-zero with the reason on the
// first failed expectation.
import { launch, loginViaDevIdp, screenshots } from './browser.mjs';

const gateway = process.env.GATEWAY_URL;
const shots = process.env.SCREENSHOT_DIR;
const sleep = ms => new Promise(r => setTimeout(r, ms));
function step(name, data = {}) { console.log(JSON.stringify({ step: name, ...data })); }
function expect(cond, message) { if (!cond) throw new Error(`expectation failed: ${message}`); }

async function waitFor(page, fn, arg, what, timeout = 30000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => ({ state: document.body.dataset.lessonState, notice: document.getElementById('notice')?.textContent, error: document.body.dataset.lastError })).catch(() => ({}));
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(state)}`);
  }
}

// The overlay's colour at a point of `layer`'s picture (0..10000) on `page`.
const pixel = (page, layer, x, y) => page.evaluate(([l, x, y]) => window.chaperone.annotations.pixel(l, x, y), [layer, x, y]);
const drawnAt = (page, layer, x, y) => waitFor(page, ([l, x, y]) => (window.chaperone.annotations.pixel(l, x, y) || [0, 0, 0, 0])[3] > 0, [layer, x, y], `a mark at (${x}, ${y}) of ${layer}'s screen`);
const clearAt = (page, layer, x, y) => waitFor(page, ([l, x, y]) => (window.chaperone.annotations.pixel(l, x, y) || [0, 0, 0, 1])[3] === 0, [layer, x, y], `nothing at (${x}, ${y}) of ${layer}'s screen`);

// A point of `layer`'s picture as a mouse position on `page`.
async function mouseAt(page, layer, x, y) {
  return page.evaluate(([l, x, y]) => {
    const canvas = document.querySelector(`canvas.annotation-layer[data-layer="${l}"]`);
    const video = canvas.parentElement.querySelector('video');
    const box = canvas.getBoundingClientRect();
    const s = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
    const w = video.videoWidth * s;
    const h = video.videoHeight * s;
    return { x: box.left + (box.width - w) / 2 + (x / 10000) * w, y: box.top + (box.height - h) / 2 + (y / 10000) * h };
  }, [layer, x, y]);
}

// Drags the mouse on `page` across `layer`'s picture through `points`,
// pausing on the way (`onWay` runs after the point at index `pauseAt`).
async function drag(page, layer, points, { pauseAt = -1, onWay } = {}) {
  const first = await mouseAt(page, layer, ...points[0]);
  await page.mouse.move(first.x, first.y);
  await page.mouse.down();
  for (let i = 1; i < points.length; i++) {
    const p = await mouseAt(page, layer, ...points[i]);
    await page.mouse.move(p.x, p.y, { steps: 4 });
    await sleep(60);
    if (i === pauseAt && onWay) await onWay();
  }
  await sleep(300);
  await page.mouse.up();
}

const line = (y, from, to, n) => Array.from({ length: n + 1 }, (_, i) => [Math.round(from + ((to - from) * i) / n), y]);

const browser = await launch();
try {
  const open = async person => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    // Headless has no screen to capture: a worksheet drawn on a canvas stands in for one.
    await page.addInitScript(() => {
      navigator.mediaDevices.getDisplayMedia = async () => {
        const c = document.createElement('canvas'); c.width = 1280; c.height = 720;
        const g = c.getContext('2d');
        const draw = () => {
          g.fillStyle = '#fdfdf8'; g.fillRect(0, 0, 1280, 720);
          g.fillStyle = '#222'; g.font = '48px sans-serif';
          g.fillText('Worksheet 3: fractions', 80, 110);
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

  const teacher = await open('teacher');
  const lesson = await teacher.evaluate(async () => {
    const now = Date.now();
    const r = await fetch('/api/lessons', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title: 'Fractions', class: '7A', starts_at_ms: now, ends_at_ms: now + 3600000 }) });
    return (await r.json()).id;
  });
  const enter = async page => { await page.goto(`${gateway}/lessons/${lesson}`); await page.click('#join'); };
  await enter(teacher);
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher admitted');
  const teacherId = await teacher.evaluate(() => window.chaperone.you);
  const pupilA = await open('pupil-a');
  const pupilB = await open('pupil-b');
  for (const p of [pupilA, pupilB]) {
    await enter(p);
    await waitFor(p, () => document.body.dataset.lessonState === 'waiting', null, 'pupil waiting');
  }
  await waitFor(teacher, () => document.querySelectorAll('[data-waiting]').length === 2, null, 'two pupils waiting');
  await teacher.click('#admit-all');
  for (const p of [pupilA, pupilB]) await waitFor(p, () => document.body.dataset.lessonState === 'admitted', null, 'pupil admitted');
  const idA = await pupilA.evaluate(() => window.chaperone.you);
  const idB = await pupilB.evaluate(() => window.chaperone.you);
  step('in_lesson', { lesson, teacherId, idA, idB });

  // Pupil A shares their screen; the teacher and pupil B see it with an overlay.
  await teacher.check(`input[data-permission="screen_share"][data-participant="${idA}"]`);
  await waitFor(pupilA, () => !!document.getElementById('share-screen'), null, 'share button for pupil A');
  await pupilA.click('#share-screen');
  for (const p of [teacher, pupilB]) {
    await waitFor(p, l => {
      const c = document.querySelector(`canvas.annotation-layer[data-layer="${l}"]`);
      const v = c && c.parentElement.querySelector('video');
      return v && v.videoWidth > 0;
    }, idA, "pupil A's screen with its overlay");
  }
  // Nothing drawn yet.
  expect((await pixel(pupilB, idA, 5000, 5000))[3] === 0, 'an empty overlay shows something');
  step('screen_shared');

  // The teacher draws a red line across the middle of A's screen.
  await teacher.click('#annotate-pen');
  await teacher.evaluate(() => { const c = document.getElementById('annotation-colour'); c.value = '#e01b24'; c.dispatchEvent(new Event('input')); });
  await drag(teacher, idA, line(5000, 2000, 8000, 6));
  await drawnAt(pupilB, idA, 5000, 5000);
  const red = await pixel(pupilB, idA, 5000, 5000);
  expect(red[0] > 150 && red[1] < 100 && red[2] < 100, `the mark at pupil B is red: ${red}`);
  expect((await pixel(pupilB, idA, 5000, 2000))[3] === 0, 'pupil B shows a mark where none was drawn');
  expect((await pixel(pupilB, idA, 1000, 5000))[3] === 0, 'pupil B shows a mark before the line starts');
  // Pupil A, whose screen it is, sees the mark on their own shared screen.
  await drawnAt(pupilA, idA, 5000, 5000);
  if (shots) {
    // For the README: a few more marks (an arrow, a box, a label) from the
    // teacher's page, with the tools, then back to the one line.
    await teacher.click('#annotate-arrow');
    await drag(teacher, idA, [[6200, 2600], [4300, 3700]]);
    await teacher.click('#annotate-ellipse');
    await drag(teacher, idA, [[1200, 6000], [5600, 7300]]);
    await sleep(500);
    await screenshots(teacher, shots, 'annotation-live', { full: false });
    await teacher.click('#annotation-undo');
    await teacher.click('#annotation-undo');
    await sleep(500);
    await teacher.click('#annotate-pen');
  }
  step('teacher_mark_seen', { rgba: red });

  // Undo: the mark goes at pupil B.
  await teacher.click('#annotation-undo');
  await clearAt(pupilB, idA, 5000, 5000);
  step('undone');

  // Redo, then clear everything: gone again.
  await teacher.click('#annotation-redo');
  await drawnAt(pupilB, idA, 5000, 5000);
  await teacher.selectOption('#annotation-clear-who', 'all');
  await teacher.click('#annotation-clear');
  await clearAt(pupilB, idA, 5000, 5000);
  step('cleared');

  // Pupil B may draw; the teacher revokes it in the middle of B's stroke.
  await teacher.check(`input[data-permission="annotate"][data-participant="${idB}"]`);
  await waitFor(pupilB, () => !!document.getElementById('annotate-pen') && !document.getElementById('annotation-tools').hidden, null, 'drawing tools for pupil B');
  await pupilB.click('#annotate-pen');
  await drag(pupilB, idA, line(3000, 1000, 9000, 12), {
    pauseAt: 5,
    onWay: async () => {
      // The first part (up to x = 3500) reaches the teacher...
      await drawnAt(teacher, idA, 2500, 3000);
      await teacher.uncheck(`input[data-permission="annotate"][data-participant="${idB}"]`);
      await waitFor(pupilB, () => window.chaperone.me.permissions.annotate === false, null, 'pupil B told of the revocation');
    },
  });
  // ...and a modified page extending the stroke anyway is refused.
  await pupilB.evaluate(() => window.chaperone.send({ extend_mark: { points: [[9500, 3000], [9600, 3000]] } }));
  await waitFor(pupilB, () => document.body.dataset.lastError === 'not_permitted', null, 'the extension refused');
  await sleep(1000);
  for (const [name, page] of [['teacher', teacher]]) {
    expect((await pixel(page, idA, 2500, 3000))[3] > 0, `${name}: the stroke before the revocation is gone`);
    for (const x of [8000, 9000, 9550]) {
      expect((await pixel(page, idA, x, 3000))[3] === 0, `${name}: the stroke after the revocation shows at x=${x}`);
    }
  }
  // The teacher sees who drew it; pupil A (drawn on, not drawing) sees no name.
  const namesAtTeacher = await teacher.evaluate(() => [...window.chaperone.annotations.marks.values()].map(m => m.name));
  expect(namesAtTeacher.length === 1 && namesAtTeacher[0], `the teacher sees the author's name: ${namesAtTeacher}`);
  step('revoked_mid_stroke');

  // Pupils are never told another pupil's name: A's page keeps B's mark
  // (if it has an overlay for its own screen) without a name.
  const pupilNames = await pupilA.evaluate(() => [...window.chaperone.annotations.marks.values()].filter(m => !m.staff).map(m => m.name));
  expect(pupilNames.every(n => n === undefined || n === null), `a pupil saw a pupil's name: ${pupilNames}`);
  const namesAtB = await pupilB.evaluate(() => [...window.chaperone.annotations.marks.values()].map(m => [m.mine, m.name]));
  expect(namesAtB.every(([mine, n]) => mine && !n), `pupil B's own mark: ${JSON.stringify(namesAtB)}`);
  step('no_pupil_names');

  // The share ends: the layer is cleared everywhere.
  await teacher.uncheck(`input[data-permission="screen_share"][data-participant="${idA}"]`);
  await waitFor(teacher, () => window.chaperone.annotations.marks.size === 0, null, 'marks cleared at the teacher when the share ended');
  step('share_ended_cleared');
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
