// One pupil behind a capped link, in Chromium: the teacher publishes a
// simulcast camera (three layers) and a microphone; pupil A's media goes
// through a TURN relay inside a network namespace whose link the test caps
// (relay-only page, TURN over UDP); pupil B is on the open path. Uncapped,
// both receive the teacher's top layer; capped, A falls to the lowest
// layer and keeps the teacher's audio while B keeps the top layer; the
// cap lifted, A climbs back. Which layer a page receives is read from its
// getStats (inbound-rtp frameWidth) against the teacher's outbound-rtp
// per rid (the widths the teacher's encoder sends now).
//
//   GATEWAY_URL=... CAP_CMD='["ip","netns",...]' UNCAP_CMD='[...]' \
//   DOWN_LIMIT_S=30 UP_LIMIT_S=60 node capped-e2e.mjs
//
// Prints one JSON line per step with what it measured; exits non-zero with
// the reason on the first failed expectation.
import { execFileSync } from 'node:child_process';
import { launch, loginViaDevIdp } from './browser.mjs';
import { decoding, expect, sleep, step, waitFor } from './lesson-checks.mjs';

const gateway = process.env.GATEWAY_URL;
const capCmd = JSON.parse(process.env.CAP_CMD);
const uncapCmd = JSON.parse(process.env.UNCAP_CMD);
const downLimit = Number(process.env.DOWN_LIMIT_S || 30) * 1000;
const upLimit = Number(process.env.UP_LIMIT_S || 60) * 1000;
const metricsUrl = process.env.METRICS_URL;
// The gateway's counters that say how the SFU treated the link: keyframe
// requests (passed, damped), layer switches, NACKs, pauses.
const COUNTERS = ['chaperone_media_plis_total{path="uplink"}', 'chaperone_media_plis_total{path="downlink"}', 'chaperone_media_keyframe_requests_damped_total', 'chaperone_media_layer_switches_total', 'chaperone_media_nacks_total{path="uplink"}', 'chaperone_media_nacks_total{path="downlink"}', 'chaperone_media_video_paused_total{change="paused"}'];
async function counters() {
  if (!metricsUrl) return {};
  const text = await (await fetch(metricsUrl)).text();
  const out = {};
  for (const line of text.split('\n')) {
    const [name, value] = line.split(' ');
    if (COUNTERS.includes(name)) out[name.replace('chaperone_media_', '')] = Number(value);
  }
  return out;
}
const delta = (a, b) => Object.fromEntries(Object.keys(b).map(k => [k, b[k] - (a[k] || 0)]));
const run = cmd => execFileSync(cmd[0], cmd.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] });

const browser = await launch();
try {
  const open = async (person, relayOnly) => {
    const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
    const page = await context.newPage();
    if (relayOnly) {
      await page.addInitScript(() => {
        const Native = window.RTCPeerConnection;
        window.RTCPeerConnection = class extends Native {
          constructor(config = {}, ...rest) { super({ ...config, iceTransportPolicy: 'relay' }, ...rest); }
        };
      });
    }
    await loginViaDevIdp(page, gateway, person);
    return page;
  };
  const enter = async (page, lesson) => {
    await page.goto(`${gateway}/lessons/${lesson}`);
    await page.click('#join');
  };

  const teacher = await open('teacher', false);
  const lesson = await teacher.evaluate(async () => {
    const now = Date.now();
    const r = await fetch('/api/lessons', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title: 'On a slow line', class: '7A', starts_at_ms: now, ends_at_ms: now + 3600000 }) });
    return (await r.json()).id;
  });
  await enter(teacher, lesson);
  await waitFor(teacher, () => document.body.dataset.lessonState === 'admitted', null, 'teacher admitted');
  const teacherId = await teacher.evaluate(() => window.chaperone.you);
  const camera = `p${teacherId}/camera`;
  const mic = `p${teacherId}/microphone`;
  step('teacher_in', { lesson, teacherId });

  const capped = await open('pupil-a', true);
  const open_ = await open('pupil-b', false);
  for (const p of [capped, open_]) {
    await enter(p, lesson);
    await waitFor(p, () => document.body.dataset.lessonState === 'waiting', null, 'pupil waiting');
  }
  await waitFor(teacher, n => document.querySelectorAll('[data-waiting]').length === n, 2, 'two pupils waiting at the teacher');
  await teacher.click('#admit-all');
  for (const p of [capped, open_]) await waitFor(p, () => document.body.dataset.lessonState === 'admitted', null, 'pupil admitted');
  for (const [name, p] of [['capped', capped], ['open', open_]]) await decoding(p, camera, `pupil ${name} decoding the teacher's video`);
  // The capped pupil's media goes through the relay in the namespace; the
  // other two go straight to the SFU.
  await waitFor(capped, () => document.body.dataset.mediaPath === 'turn-udp', null, "the capped pupil's path through the relay");
  await waitFor(open_, () => document.body.dataset.mediaPath === 'direct-udp', null, "the open pupil's direct path");
  step('admitted');

  // The widths the teacher sends now, per rid (a rid its encoder has
  // dropped, for want of CPU or bandwidth, has none).
  const layers = async () => teacher.evaluate(async () => {
    const out = {};
    (await window.chaperone.pc.getStats()).forEach(r => {
      if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid && r.frameWidth && r.framesPerSecond) out[r.rid] = Math.max(out[r.rid] || 0, r.frameWidth);
    });
    return out;
  });
  const received = async (page, prefix) => {
    const rows = await page.evaluate(() => window.chaperone.inbound());
    return rows.filter(r => (r.track || '').startsWith(prefix));
  };
  // Which layer `page` receives of the teacher's camera now: the rid whose
  // width is nearest to the decoded width (null before a frame), and
  // whether it is the top one the teacher sends now.
  const layerAt = async page => {
    const [row] = await received(page, camera);
    const sent = await layers();
    const rids = Object.keys(sent);
    if (!row || !row.width || !rids.length) return { layer: null, top: false, width: row?.width || 0, sent };
    const near = rid => Math.abs(sent[rid] - row.width);
    const layer = rids.reduce((a, b) => (near(b) < near(a) ? b : a));
    const top = rids.reduce((a, b) => (sent[b] > sent[a] ? b : a));
    return { layer, top: layer === top && layer !== 'l', width: row.width, sent };
  };
  // Waits until `page` receives the lowest layer ('l') or the top one the
  // teacher sends ('top'); returns the seconds it took.
  const until = async (page, want, limit, what) => {
    const start = Date.now();
    let last;
    while (Date.now() - start < limit) {
      last = await layerAt(page);
      if (want === 'top' ? last.top : last.layer === want) return (Date.now() - start) / 1000;
      await sleep(250);
    }
    throw new Error(`${what}: not on layer ${want} within ${limit / 1000} s (last ${JSON.stringify(last)})`);
  };
  const audio = async page => {
    const [row] = await received(page, mic);
    return { packets: row?.packets || 0, lost: row?.lost || 0 };
  };

  // Uncapped: both pupils on the top layer.
  const [topCapped, topOpen] = await Promise.all([
    until(capped, 'top', 60000, 'the capped pupil before the cap'),
    until(open_, 'top', 60000, 'the open pupil'),
  ]);
  step('both_on_top', { capped_s: topCapped, open_s: topOpen, sent: await layers() });

  // 15 s: the layer each pupil receives every 500 ms, the capped pupil's
  // audio from the teacher, and how the teacher's encoder is doing (a
  // starved CPU makes it send fewer layers or frames).
  // Bytes the teacher has sent per rid so far.
  const sentBytes = async () => teacher.evaluate(async () => {
    const out = {};
    (await window.chaperone.pc.getStats()).forEach(r => {
      if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid) out[r.rid] = (out[r.rid] || 0) + (r.bytesSent || 0);
    });
    return out;
  });
  const received_ = async () => Object.fromEntries(await Promise.all([['capped', capped], ['open', open_]].map(async ([n, p]) => [n, (await received(p, camera))[0]?.bytes || 0])));
  const observe = async () => {
    const c0 = await counters();
    const s0 = await sentBytes();
    const r0 = await received_();
    const t0 = Date.now();
    const a0 = await audio(capped);
    const layers = { capped: {}, open: {} };
    const teacherLimits = {};
    for (let i = 0; i < 30; i++) {
      await sleep(500);
      for (const [name, p] of [['capped', capped], ['open', open_]]) {
        const { layer, top } = await layerAt(p);
        const key = top ? 'top' : layer;
        layers[name][key] = (layers[name][key] || 0) + 1;
      }
      const why = await teacher.evaluate(async () => {
        let reason = 'none';
        (await window.chaperone.pc.getStats()).forEach(r => {
          if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid === 'h' && r.qualityLimitationReason) reason = r.qualityLimitationReason;
        });
        return reason;
      });
      teacherLimits[why] = (teacherLimits[why] || 0) + 1;
    }
    const a1 = await audio(capped);
    const packets = a1.packets - a0.packets;
    const lost = a1.lost - a0.lost;
    expect(packets > 300, `the capped pupil received ${packets} audio packets in 15 s`);
    const secs = (Date.now() - t0) / 1000;
    const kbits = (a, b) => Object.fromEntries(Object.keys(b).map(k => [k, Math.round((b[k] - (a[k] || 0)) * 8 / secs / 1000)]));
    return { audio_packets: packets, audio_lost: lost, audio_loss: lost / (packets + lost), layers, teacher_limited_by: teacherLimits, teacher_sent_kbit_s: kbits(s0, await sentBytes()), camera_received_kbit_s: kbits(r0, await received_()), gateway: delta(c0, await counters()) };
  };
  step('uncapped_window', await observe());

  // Capped at 500 kbit/s: the capped pupil falls to the lowest layer.
  run(capCmd);
  const down = await until(capped, 'l', downLimit, 'the capped pupil after the cap');
  step('capped_on_lowest', { seconds: down });
  step('capped_window', await observe());

  // The cap lifted: back on the top layer.
  run(uncapCmd);
  const up = await until(capped, 'top', upLimit, 'the capped pupil after the cap was lifted');
  step('uncapped_on_top', { seconds: up });

  await teacher.click('#end-lesson');
  await teacher.click('#dialog-confirm');
  for (const p of [capped, open_]) await waitFor(p, () => document.body.dataset.lessonState === 'ended', null, 'lesson ended at a pupil');
  step('ended');
} catch (err) {
  console.error(err && err.stack || String(err));
  process.exitCode = 1;
} finally {
  await browser.close();
}
