// A lesson from a school that blocks UDP: every page's RTCPeerConnection is
// made with `iceTransportPolicy: 'relay'` (nothing but a TURN relay may
// carry media), and the gateway hands out one TURN URL only, TCP or TLS,
// to a real coturn. The teacher and two pupils see and hear each other
// through it, each page's connection details name the path, and the
// teacher's controls hold (pupil A's microphone turned off: its audio stops
// at pupil B while B's still reaches A).
//
//   GATEWAY_URL=http://127.0.0.1:8080 TURN_URL=turns:127.0.0.1:5349?transport=tcp \
//   EXPECT_PATH=turn-tls [CHROMIUM_ARGS='--ignore-certificate-errors-spki-list=...'] \
//   [SCREENSHOT_DIR=dir] \
//   node turn-e2e.mjs
//
// Prints one JSON line per step; exits non-zero with the reason on the
// first failed expectation.
import { launch, loginViaDevIdp, screenshots } from './browser.mjs';
import { decoding, expect, growing, notForwarded, step, stopped, waitFor } from './lesson-checks.mjs';

const gateway = process.env.GATEWAY_URL;
const turnUrl = process.env.TURN_URL;
const expectPath = process.env.EXPECT_PATH;
const shots = process.env.SCREENSHOT_DIR;
const args = (process.env.CHROMIUM_ARGS || '').split(' ').filter(Boolean);

const browser = await launch({ args });
try {
  const open = async person => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    // The school's network: relay only. Every configuration the page uses
    // is kept for the checks below.
    await page.addInitScript(() => {
      const Native = window.RTCPeerConnection;
      window.rtcConfigs = [];
      window.RTCPeerConnection = class extends Native {
        constructor(config = {}, ...rest) {
          const relayed = { ...config, iceTransportPolicy: 'relay' };
          window.rtcConfigs.push(relayed);
          super(relayed, ...rest);
        }
      };
    });
    await loginViaDevIdp(page, gateway, person);
    return page;
  };
  const enter = async (page, lesson) => {
    await page.goto(`${gateway}/lessons/${lesson}`);
    await page.click('#join');
  };

  const teacher = await open('teacher');
  const lesson = await teacher.evaluate(async () => {
    const now = Date.now();
    const r = await fetch('/api/lessons', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title: 'Behind the firewall', class: '7A', starts_at_ms: now, ends_at_ms: now + 3600000 }) });
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
  await waitFor(teacher, n => document.querySelectorAll('[data-waiting]').length === n, 2, 'two pupils waiting at the teacher');
  await teacher.click('#admit-all');
  for (const p of [pupilA, pupilB]) await waitFor(p, () => document.body.dataset.lessonState === 'admitted', null, 'pupil admitted');
  step('admitted', { idA, idB });

  // Every page was given exactly the one TURN URL, and used relay only.
  for (const [name, p] of [['teacher', teacher], ['a', pupilA], ['b', pupilB]]) {
    const configs = await p.evaluate(() => window.rtcConfigs);
    expect(configs.length >= 1, `${name}: no RTCPeerConnection`);
    for (const c of configs) {
      const urls = (c.iceServers || []).flatMap(s => [].concat(s.urls));
      expect(c.iceTransportPolicy === 'relay', `${name}: policy ${c.iceTransportPolicy}`);
      expect(urls.length === 1 && urls[0] === turnUrl, `${name}: ICE servers ${JSON.stringify(urls)}, expected only ${turnUrl}`);
      expect(c.iceServers[0].username && c.iceServers[0].credential, `${name}: no TURN credentials`);
    }
  }

  // The teacher's camera decoded and microphone heard at every pupil.
  const decoded = {};
  for (const [name, p] of [['a', pupilA], ['b', pupilB]]) {
    decoded[name] = await decoding(p, `p${teacherId}/camera`, `pupil ${name} decoding the teacher's video through TURN`);
    await growing(p, `p${teacherId}/microphone`, `the teacher's voice at pupil ${name} through TURN`);
  }
  step('teacher_seen_and_heard', decoded);

  // Pupils take part with voice and camera: the teacher decodes both
  // cameras, and each pupil hears the other.
  for (const p of [pupilA, pupilB]) {
    await p.click('#mic-toggle');
    await p.click('#camera-toggle');
  }
  const fromPupils = {
    a: await decoding(teacher, `p${idA}/camera`, "pupil A's camera decoded at the teacher"),
    b: await decoding(teacher, `p${idB}/camera`, "pupil B's camera decoded at the teacher"),
  };
  await growing(pupilB, `p${idA}/microphone`, "pupil A's voice at pupil B");
  await growing(pupilA, `p${idB}/microphone`, "pupil B's voice at pupil A");
  await growing(teacher, `p${idA}/microphone`, "pupil A's voice at the teacher");
  step('pupils_seen_and_heard', fromPupils);

  // Each page's connection details name the path from its selected
  // candidate pair, and getStats agrees: a relayed local candidate over
  // the expected transport.
  const paths = {};
  for (const [name, p] of [['teacher', teacher], ['a', pupilA], ['b', pupilB]]) {
    await waitFor(p, want => document.body.dataset.mediaPath === want, expectPath, `${name}'s connection details showing ${expectPath}`);
    const shown = await p.evaluate(() => ({
      path: document.getElementById('connection-details').dataset.path,
      text: document.getElementById('connection-details').textContent,
      visible: !document.getElementById('connection-details').hidden,
    }));
    const local = await p.evaluate(async () => {
      const stats = await window.chaperone.pc.getStats();
      let pair = null;
      stats.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
      const l = pair && stats.get(pair.localCandidateId);
      return l && { type: l.candidateType, relayProtocol: l.relayProtocol };
    });
    expect(shown.visible && shown.path === expectPath, `${name}: connection details ${JSON.stringify(shown)}`);
    expect(local && local.type === 'relay' && `turn-${local.relayProtocol}` === expectPath, `${name}: selected local candidate ${JSON.stringify(local)}`);
    paths[name] = shown.text;
  }
  if (shots) {
    await pupilA.click('#connection-details summary');
    await screenshots(pupilA, shots, `pupil-connection-${expectPath}`, { full: false });
  }
  step('path_shown', paths);

  // Mic off for pupil A: its voice stops at pupil B; B's still reaches A.
  await teacher.click(`button[data-action="mic-off"][data-participant="${idA}"]`);
  await notForwarded(teacher, [idA], 'microphone', "the server turning pupil A's mic off");
  await stopped(pupilB, `p${idA}/microphone`, "pupil A's voice at pupil B after mic off");
  await stopped(teacher, `p${idA}/microphone`, "pupil A's voice at the teacher after mic off");
  await growing(pupilA, `p${idB}/microphone`, "pupil B's voice still at pupil A");
  step('mic_off_enforced');

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
