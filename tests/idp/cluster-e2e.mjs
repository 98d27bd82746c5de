// A lesson in headless Chromium across three gateway nodes: the teacher's
// page and a pupil's page are served by the two nodes that do not own the
// lesson (their sockets are relayed to the owner); the pupil is admitted,
// decodes the teacher's video, and has the microphone revoked. Then the
// owner is killed (SIGKILL): both pages rejoin by themselves through their
// own node, the pupil straight back into the lesson (no waiting room) with
// the microphone still revoked, and decodes the teacher's video again.
//
//   GATEWAY_URLS=http://a,http://b,http://c  (the first is the public one)
//   METRICS_URLS=...  GATEWAY_PIDS=...        (the same order)
//   node cluster-e2e.mjs
//
// Prints one JSON line per step; exits non-zero on the first failed check.
import { createLesson, launch, loginViaDevIdp } from './browser.mjs';
import { decoding, expect, sleep, step, waitFor } from './lesson-checks.mjs';

const urls = process.env.GATEWAY_URLS.split(',');
const metrics = process.env.METRICS_URLS.split(',');
const pids = process.env.GATEWAY_PIDS.split(',').map(Number);

// Which node owns a lesson now (the one whose metrics say it holds a lease).
async function owner() {
  for (let i = 0; i < metrics.length; i++) {
    try {
      const text = await (await fetch(`${metrics[i]}/metrics`)).text();
      if (/^chaperone_cluster_lessons_owned 1$/m.test(text)) return i;
    } catch { /* a killed node does not answer */ }
  }
  return null;
}

async function enter(page, base, lesson) {
  await page.goto(`${base}/lessons/${lesson}`);
  await page.click('#join');
}

const browser = await launch();
try {
  const open = async person => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    // Sign in at the school's address; the session (in Redis) and its
    // cookie (per host, not per port) hold on every node.
    await loginViaDevIdp(page, urls[0], person);
    return page;
  };

  const teacher = await open('teacher');
  const lesson = await createLesson(teacher);
  // The first join places the lesson on a node (the least loaded).
  await enter(teacher, urls[0], lesson);
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher admitted');
  let own = null;
  for (let i = 0; i < 50 && own === null; i++) { own = await owner(); if (own === null) await sleep(100); }
  expect(own !== null, 'no node owns the lesson');
  const doors = [0, 1, 2].filter(i => i !== own);
  // The teacher's page comes from one of the other two nodes, the pupil's
  // from the other.
  await enter(teacher, urls[doors[0]], lesson);
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher admitted through a door');
  const teacherId = await teacher.evaluate(() => window.chaperone.you);
  const pupil = await open('pupil-a');
  await enter(pupil, urls[doors[1]], lesson);
  await waitFor(pupil, () => document.body.dataset.lessonState === 'waiting', null, 'pupil waiting');
  const pupilId = await pupil.evaluate(() => window.chaperone.you);
  await teacher.click(`button[data-admit="${pupilId}"]`);
  await waitFor(pupil, () => document.body.dataset.lessonState === 'admitted', null, 'pupil admitted');
  await decoding(pupil, `p${teacherId}/camera`, "the pupil decoding the teacher's video");
  await teacher.uncheck(`input[data-permission="microphone"][data-participant="${pupilId}"]`);
  await waitFor(pupil, () => window.chaperone.me.permissions.microphone === false, null, "the pupil's microphone revoked");
  step('lesson_across_nodes', { lesson, owner: own, teacher_node: doors[0], pupil_node: doors[1] });

  // The owner dies once that revocation is in the lesson's snapshot (a few
  // milliseconds; a second is plenty).
  await sleep(1000);
  const killedAt = Date.now();
  process.kill(pids[own], 'SIGKILL');
  await waitFor(teacher, old => document.body.dataset.lessonState === 'admitted' && window.chaperone.you !== old, teacherId, 'the teacher back in the lesson', 30000);
  const newTeacher = await teacher.evaluate(() => window.chaperone.you);
  // The pupil never passes through the waiting room again.
  const states = [];
  const seen = setInterval(async () => {
    try { states.push(await pupil.evaluate(() => document.body.dataset.lessonState)); } catch { /* navigating */ }
  }, 50);
  await waitFor(pupil, old => document.body.dataset.lessonState === 'admitted' && window.chaperone.you !== old, pupilId, 'the pupil back in the lesson', 30000);
  clearInterval(seen);
  expect(!states.includes('waiting'), `the pupil was put in the waiting room after the takeover: ${states.join(',')}`);
  expect((await pupil.evaluate(() => window.chaperone.me.permissions.microphone)) === false, 'the revoked microphone came back');
  await decoding(pupil, `p${newTeacher}/camera`, "the pupil decoding the teacher's video again", 30000);
  const back = (Date.now() - killedAt) / 1000;
  const newOwner = await owner();
  expect(newOwner !== null && newOwner !== own, `the lesson was not taken over (owner ${newOwner})`);
  step('back_after_kill', { back_secs: back, new_owner: newOwner });

  await teacher.evaluate(() => window.chaperone.send('end_lesson'));
  await waitFor(pupil, () => document.body.dataset.lessonState === 'ended', null, 'the lesson ended at the pupil');
  step('ended', { lesson });
} finally {
  await browser.close();
}
