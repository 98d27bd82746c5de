// A real lesson in headless Chromium against `gateway --dev`: a teacher and
// two pupils sign in through the development provider; pupils wait; the
// teacher admits one, then all; every pupil decodes the teacher's video;
// controls stop media at the SFU (bytes stop growing at the receivers);
// a click survives a re-render mid-press; screen share is granted, seen and
// revoked; chat, public and private, and a refused pupil-to-pupil message;
// pages rejoin by themselves after a dropped connection or a failed media
// connection.
//
//   GATEWAY_URL=http://127.0.0.1:8080 [SCREENSHOT_DIR=dir] node lesson-e2e.mjs
//
// Prints one JSON line per step with what it measured; exits non-zero with
// the reason on the first failed expectation.
import { launch, loginViaDevIdp, screenshots } from './browser.mjs';
import { decoding, expect, growing, notForwarded, sleep, step, stopped, waitFor } from './lesson-checks.mjs';

const gateway = process.env.GATEWAY_URL;
const shots = process.env.SCREENSHOT_DIR;

// Waits until `page` is back in the lesson under a new participant id (a
// rejoin), then until it decodes the teacher's camera again.
async function backInLesson(page, oldId, teacherId, what) {
  await waitFor(page, old => document.body.dataset.lessonState === 'admitted' && window.chaperone.you !== old, oldId, `${what}: back in the lesson`);
  await decoding(page, `p${teacherId}/camera`, `${what}: the teacher's video decoded again`);
}

// The lesson page at both sizes, as it fits on the screen.
async function shot(page, name) {
  await screenshots(page, shots, name, { full: false });
}

// Opens the lesson page and passes the device check.
async function enter(page, lesson) {
  await page.goto(`${gateway}/lessons/${lesson}`);
  await page.click('#join');
}

const browser = await launch();
try {
  const open = async person => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    page.on('dialog', d => d.accept(d.type() === 'prompt' ? 'test note' : undefined));
    // Headless has no screen to capture: a moving canvas stands in for one.
    await page.addInitScript(() => {
      navigator.mediaDevices.getDisplayMedia = async () => {
        const c = document.createElement('canvas'); c.width = 640; c.height = 360;
        const g = c.getContext('2d'); let n = 0;
        setInterval(() => { g.fillStyle = `hsl(${(n += 7) % 360},70%,50%)`; g.fillRect(0, 0, 640, 360); }, 40);
        return c.captureStream(25);
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
  await enter(teacher, lesson);
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher admitted');
  const teacherId = await teacher.evaluate(() => window.chaperone.you);
  step('teacher_in', { lesson, teacherId });

  const pupilA = await open('pupil-a');
  const pupilB = await open('pupil-b');
  for (const p of [pupilA, pupilB]) {
    await enter(p, lesson);
    await waitFor(p, () => document.body.dataset.lessonState === 'waiting', null, 'pupil waiting');
  }
  const idA = await pupilA.evaluate(() => window.chaperone.you);
  const idB = await pupilB.evaluate(() => window.chaperone.you);
  // The waiting room gets nothing: no roster, no media.
  expect((await pupilA.evaluate(() => window.chaperone.roster.length)) === 0, 'a waiting pupil saw the roster');
  await shot(pupilA, 'pupil-waiting');
  await waitFor(teacher, n => document.querySelectorAll('[data-waiting]').length === n, 2, 'two pupils waiting at the teacher');
  await shot(teacher, 'teacher-waiting-room');
  step('pupils_waiting', { idA, idB });

  await teacher.click(`button[data-admit="${idA}"]`);
  await waitFor(pupilA, () => document.body.dataset.lessonState === 'admitted', null, 'pupil A admitted');
  expect((await pupilB.evaluate(() => document.body.dataset.lessonState)) === 'waiting', 'pupil B admitted too early');
  await teacher.click('#admit-all');
  await waitFor(pupilB, () => document.body.dataset.lessonState === 'admitted', null, 'pupil B admitted');
  step('admitted');

  // Every pupil decodes the teacher's camera.
  const decoded = {};
  for (const [name, p] of [['a', pupilA], ['b', pupilB]]) {
    decoded[name] = await decoding(p, `p${teacherId}/camera`, `pupil ${name} decoding the teacher's video`);
  }
  step('teacher_video_decoded', decoded);

  // Pupils take part with voice and camera (two switches on the toolbar).
  for (const p of [pupilA, pupilB]) {
    await p.click('#mic-toggle');
    await p.click('#camera-toggle');
  }
  await growing(pupilB, `p${idA}/microphone`, "pupil A's voice at pupil B");
  await growing(teacher, `p${idA}/camera`, "pupil A's camera at the teacher");
  await growing(teacher, `p${idB}/camera`, "pupil B's camera at the teacher");
  await shot(teacher, 'teacher-lesson');
  await shot(pupilA, 'pupil-lesson');
  step('pupils_publishing');

  // Mic off for pupil A: pupil B stops receiving A's audio; B's audio still flows to A.
  await teacher.click(`button[data-action="mic-off"][data-participant="${idA}"]`);
  await notForwarded(teacher, [idA], 'microphone', "the server turning pupil A's mic off");
  const afterMute = await stopped(pupilB, `p${idA}/microphone`, "pupil A's voice after mic off");
  await growing(pupilA, `p${idB}/microphone`, "pupil B's voice still at pupil A");
  step('mic_off_enforced', { bytes_frozen_at: afterMute });

  // All mics off, clicked while the page re-renders between the press and the
  // release (a message can arrive at any moment): the click still counts,
  // and pupil B's voice stops reaching pupil A.
  const button = await teacher.locator('#all-mics-off').boundingBox();
  await teacher.mouse.move(button.x + button.width / 2, button.y + button.height / 2);
  await teacher.mouse.down();
  await teacher.evaluate(() => window.chaperone.render());
  await teacher.mouse.up();
  await notForwarded(teacher, [idA, idB], 'microphone', 'the server turning all mics off');
  await stopped(pupilA, `p${idB}/microphone`, "pupil B's voice after all mics off");
  step('all_mics_off_enforced');

  // All cameras off: no pupil video reaches anyone.
  await teacher.click('#all-cams-off');
  await notForwarded(teacher, [idA, idB], 'camera', 'the server turning all cameras off');
  await stopped(teacher, `p${idA}/camera`, "pupil A's camera at the teacher after all cameras off");
  await stopped(teacher, `p${idB}/camera`, "pupil B's camera at the teacher after all cameras off");
  await stopped(pupilA, `p${idB}/camera`, "pupil B's camera at pupil A after all cameras off");
  step('all_cameras_off_enforced');

  // Screen share: granted to A, seen by B, revoked again.
  await teacher.check(`input[data-permission="screen_share"][data-participant="${idA}"]`);
  await waitFor(pupilA, () => !!document.getElementById('share-screen'), null, 'share button for pupil A');
  await pupilA.click('#share-screen');
  step('screen_share_seen', { frames: await decoding(pupilB, `p${idA}/screen_share`, "pupil A's screen at pupil B") });
  await teacher.uncheck(`input[data-permission="screen_share"][data-participant="${idA}"]`);
  await notForwarded(teacher, [idA], 'screen_share', "the server revoking pupil A's screen share");
  await stopped(pupilB, `p${idA}/screen_share`, "pupil A's screen after the permission was revoked");
  step('screen_share_revoked');

  // Chat: public, private to the teacher, and pupil-to-pupil refused.
  await pupilA.fill('#chat-input', 'hello everyone');
  await pupilA.click('#chat-send');
  await waitFor(pupilB, () => [...document.querySelectorAll('#chat-log li')].some(li => li.textContent.includes('hello everyone')), null, 'public chat at pupil B');
  await pupilA.selectOption('#chat-to', String(teacherId));
  await pupilA.fill('#chat-input', 'a private question');
  await pupilA.click('#chat-send');
  await waitFor(teacher, () => [...document.querySelectorAll('#chat-log li[data-private="true"]')].some(li => li.textContent.includes('a private question')), null, 'private message at the teacher');
  await sleep(500);
  expect(!(await pupilB.evaluate(() => document.body.innerText.includes('a private question'))), 'pupil B saw a private message');
  // The page offers no pupil as a private recipient...
  const options = await pupilA.evaluate(() => [...document.querySelectorAll('#chat-to option')].map(o => o.value));
  expect(!options.includes(String(idB)), 'pupil B offered as a private recipient');
  // ...and the server refuses a modified page that tries anyway.
  await pupilA.evaluate(id => window.chaperone.send({ chat: { to: id, text: 'psst' } }), idB);
  await waitFor(pupilA, () => document.body.dataset.lastError === 'pupil_to_pupil', null, 'pupil_to_pupil refusal');
  await sleep(500);
  expect(!(await pupilB.evaluate(() => document.body.innerText.includes('psst'))), 'pupil B received a pupil-to-pupil message');
  await shot(teacher, 'teacher-chat');
  step('chat_rules_enforced');

  // Pupil B's connection drops: the page rejoins by itself, straight back
  // into the lesson (never the waiting room), and sees the teacher again.
  await pupilB.evaluate(() => {
    const c = window.chaperone, set = c.setState.bind(c);
    window.statesSeen = [];
    c.setState = s => { window.statesSeen.push(s); set(s); };
    c.ws.close(4000, 'test: the connection dropped');
  });
  await backInLesson(pupilB, idB, teacherId, 'pupil B after its connection dropped');
  const statesSeen = await pupilB.evaluate(() => window.statesSeen);
  expect(statesSeen.includes('reconnecting') && !statesSeen.includes('waiting'), `pupil B's states on rejoining: ${statesSeen}`);
  expect(await pupilB.evaluate(() => [...document.querySelectorAll('#chat-log li')].some(li => li.textContent.includes('hello everyone'))), 'pupil B lost the chat on rejoining');
  step('rejoined', { states: statesSeen });

  // Pupil A's media connection fails (ICE or DTLS; told to the page as the
  // browser would, since a headless browser on loopback cannot lose its
  // network): the page rejoins and receives the teacher's video again.
  await pupilA.evaluate(() => {
    const pc = window.chaperone.pc;
    Object.defineProperty(pc, 'connectionState', { get: () => 'failed' });
    pc.dispatchEvent(new Event('connectionstatechange'));
  });
  await backInLesson(pupilA, idA, teacherId, 'pupil A after its media connection failed');
  step('media_failure_rejoined');

  // The teacher ends the lesson (and confirms, in the page's own dialog): everyone is told.
  await teacher.click('#end-lesson');
  await teacher.click('#dialog-confirm');
  for (const p of [pupilA, pupilB]) await waitFor(p, () => document.body.dataset.lessonState === 'ended', null, 'lesson ended at a pupil');
  step('ended');
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
